"""One student run's settings, validated once: `StudentConfig`.

Every student run of the project (notebook 03's, an ablation seed, a sweep point, an Optuna trial) is
one `StudentConfig`. It is frozen and checked when it is built, so a bad value stops at once with a
one-line ConfigError that names it, before any data is read. `pipeline.student_run(config)` trains
it, `sweep.run_many([config, ...])` runs many, and `cache_config` is the run cache's name for it.

    from igkd.config import StudentConfig
    c = StudentConfig(4.1, "KD_IG", seed=1)        # profile: $IGKD_PROFILE, resolved now
    c.replace(alpha=0.1).recipe.epochs             # the profile's student recipe, as a train.Recipe
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from igkd import attribution, losses, models, profiles, teachers, train
from igkd.errors import ConfigError

# What a student run can be for (`purpose`): the experiments of notebooks 04 (and its fix ablation),
# 05, 06, 09 and 11, a single run (notebook 03 or a script), and "attention": chapter 13's AT
# students and their reference. The summary page counts runs by these tags.
EXPERIMENTS = (
    "ablation",
    "fix-ablation",
    "monte-carlo",
    "sweep",
    "tuning",
    "regime",
    "single",
    "attention",
)


def purpose(experiment: str, profile: str | None = None, **params: Any) -> dict[str, Any]:
    """The tag a run records for what it was made (or reused) for: {"experiment", "profile",
    **params}, e.g. purpose("ablation", "quick", methods=[...], runs=3, epochs=5, data_share=0.2).
    `params` must be JSON values; ConfigError for an unknown experiment."""
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"experiment={experiment!r}; use one of {', '.join(EXPERIMENTS)}")
    return {"experiment": experiment, "profile": profiles.resolve(profile), **params}


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class StudentConfig:
    """What one student run is: size, method (a paper preset with overrides), profile, seed, data.

    `compression` is a label or ratio of `models.COMPRESSION_TABLE` (stored as the label, e.g.
    "4.1"); `method` one of `losses.PRESETS`, whose alpha, temperature, overlay_prob and gamma
    the four overrides replace when not None; `profile` None means $IGKD_PROFILE (stored resolved,
    so a worker elsewhere runs what the caller meant); `epochs` None the profile's recipe.
    Data: `val_fraction` > 0 holds out a stratified validation split of the training set (never the
    test set); `train_fraction` < 1 then trains on a stratified subset of the rest; both draws use
    `split_seed`, None meaning `seed`. `teacher_outputs` "cached" precomputes the teacher's logits
    once (unaugmented); `overlay_order` "published" leaves the IG map uncropped as the published
    code did; `at_form` "zagoruyko" is Zagoruyko and Komodakis' attention transfer.
    The teacher: `teacher_checkpoint` a state_dict file (path or URL, `#sha256=` pin optional; see
    `igkd.teachers`), None meaning $IGKD_TEACHER or else the profile's own teacher run (stored
    resolved). The IG maps of the overlay: `ig_n_steps` quadrature points (None: the profile's) from
    `ig_baseline` (`attribution.BASELINES`).
    """

    compression: str = "4.1"
    method: str = "KD_IG"
    profile: str | None = None
    seed: int = 0
    alpha: float | None = None
    temperature: float | None = None
    overlay_prob: float | None = None
    gamma: float | None = None
    epochs: int | None = None
    teacher_outputs: str = "online"
    at_form: str = "paper"
    overlay_order: str = "aligned"
    train_fraction: float = 1.0
    val_fraction: float = 0.0
    split_seed: int | None = None
    teacher_checkpoint: str | None = None
    ig_n_steps: int | None = None
    ig_baseline: str = "normalized-zero"

    def __post_init__(self) -> None:
        if not _is_int(self.seed):
            raise ConfigError(f"seed={self.seed!r}; use an integer")
        if self.split_seed is not None and not _is_int(self.split_seed):
            raise ConfigError(
                f"split_seed={self.split_seed!r}; use an integer or None (the run's seed)"
            )
        if not (_is_number(self.train_fraction) and 0 < self.train_fraction <= 1):
            raise ConfigError(f"train_fraction={self.train_fraction!r}; use a fraction in (0, 1]")
        if not (_is_number(self.val_fraction) and 0 <= self.val_fraction < 1):
            raise ConfigError(f"val_fraction={self.val_fraction!r}; use a fraction in [0, 1)")
        if self.epochs is not None and (not _is_int(self.epochs) or self.epochs < 1):
            raise ConfigError(
                f"epochs={self.epochs!r}; use a positive integer or None (the profile's)"
            )
        if self.teacher_outputs not in ("online", "cached"):
            raise ConfigError(f"teacher_outputs={self.teacher_outputs!r}; use 'online' or 'cached'")
        if self.overlay_order not in ("aligned", "published"):
            raise ConfigError(f"overlay_order={self.overlay_order!r}; use 'aligned' or 'published'")
        if self.ig_n_steps is not None and (not _is_int(self.ig_n_steps) or self.ig_n_steps < 1):
            raise ConfigError(
                f"ig_n_steps={self.ig_n_steps!r}; use a positive integer or None (the profile's)"
            )
        if self.ig_baseline not in attribution.BASELINES:
            raise ConfigError(
                f"ig_baseline={self.ig_baseline!r}; use one of {', '.join(attribution.BASELINES)}"
            )
        object.__setattr__(self, "teacher_checkpoint", teachers.given(self.teacher_checkpoint))
        # Stored resolved: the label, the profile's name (raises for unknown ones).
        object.__setattr__(self, "compression", models.compression_row(self.compression).label)
        object.__setattr__(self, "profile", profiles.get(self.profile).name)
        self.weights  # noqa: B018 - validates the method and its overrides now
        self.recipe  # noqa: B018

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def of(cls, config: StudentConfig | Mapping | float | str | None = None, **changes: Any):
        """A StudentConfig from another (with `changes`), from a mapping of its fields, or from
        a compression (with the other fields in `changes`). Unknown names raise ConfigError."""
        fields = [f.name for f in dataclasses.fields(cls)]
        if isinstance(config, StudentConfig):
            base = config.kwargs()
        elif isinstance(config, Mapping):
            base = dict(config)
        elif config is None:
            base = {}
        else:
            base = {"compression": config}
        changes = {k: v for k, v in changes.items() if not (k == "method" and v is None)}
        unknown = sorted(set(base) - set(fields)) + sorted(set(changes) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown student setting(s) {unknown}; use {', '.join(fields)} (StudentConfig)"
            )
        return cls(**{**base, **changes})

    def replace(self, **changes: Any) -> StudentConfig:
        """A copy with `changes`, validated again."""
        return StudentConfig.of(self, **changes)

    def kwargs(self) -> dict[str, Any]:
        """The fields that differ from the defaults, always with compression, method, profile and
        seed: what tables print and what `StudentConfig.of` rebuilds it from."""
        always = {"compression", "method", "profile", "seed"}
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name in always or getattr(self, f.name) != f.default
        }

    # --- what it resolves to ----------------------------------------------------------------------

    @property
    def row(self) -> models.Compression:
        return models.COMPRESSION_TABLE[self.compression]

    @property
    def weights(self) -> losses.Method:
        """The method's loss weights and overlay: the preset with the overrides."""
        return losses.method(
            self.method,
            alpha=self.alpha,
            temperature=self.temperature,
            overlay_prob=self.overlay_prob,
            gamma=self.gamma,
            at_form=self.at_form,
        )

    @property
    def recipe(self) -> train.Recipe:
        """The profile's student recipe, with `epochs` when set."""
        prof = profiles.get(self.profile)
        epochs = {"epochs": self.epochs} if self.epochs is not None else {}
        return train.Recipe(**{**prof.student_recipe, **epochs})

    @property
    def needs_teacher(self) -> bool:
        """KD, AT or the overlay: all three need the teacher (the IG maps are the teacher's)."""
        return self.weights.needs_teacher or self.needs_ig

    @property
    def needs_ig(self) -> bool:
        return self.weights.overlay_prob > 0

    @property
    def splits(self) -> dict[str, float | int]:
        """The data-split settings that change the data (absent for the defaults):
        train_fraction, val_fraction and split_seed (resolved: None -> seed)."""
        out: dict[str, float | int] = {}
        if self.train_fraction < 1:
            out["train_fraction"] = float(self.train_fraction)
        if self.val_fraction > 0:
            out["val_fraction"] = float(self.val_fraction)
        if out:  # the seed of the draws that make the splits
            out["split_seed"] = self.split_seed if self.split_seed is not None else self.seed
        return out

    def settings(self) -> dict[str, Any]:
        """The resolved settings a student run records in its metrics (`settings`)."""
        m = self.weights
        return {
            "profile": self.profile,
            "compression": self.compression,
            "layers_removed": self.row.layers_removed,
            "method": self.method,
            "weights": dataclasses.asdict(m),
            "recipe": dataclasses.asdict(self.recipe),
            "teacher_outputs": self.teacher_outputs if m.needs_teacher else None,
            "overlay_order": self.overlay_order if m.overlay_prob > 0 else None,
            **self.splits,
            # Outside the cache key (the teacher run and IG store names carry them), shown in tables.
            **({"teacher_checkpoint": self.teacher_checkpoint} if self.teacher_checkpoint else {}),
            **({"ig_n_steps": self.ig_n_steps} if self.ig_n_steps is not None else {}),
            **({"ig_baseline": self.ig_baseline} if self.ig_baseline != "normalized-zero" else {}),
        }

    def cache_config(
        self,
        *,
        teacher_run: str | None,
        ig_run: str | None,
        train_data: str,
        test_data: str,
        val_data: str | None = None,
    ) -> dict[str, Any]:
        """The run cache's config of this student, given the names (hashes) of its teacher run and
        IG store and the fingerprints of its data: what its hash is computed from."""
        s = self.settings()
        config = {
            "model": "student",
            "layers_removed": s["layers_removed"],
            "method": s["weights"],
            "recipe": s["recipe"],
            "seed": self.seed,
            "teacher_run": teacher_run,
            "ig_run": ig_run,
            "teacher_outputs": s["teacher_outputs"],
            "overlay_order": s["overlay_order"],
            "train_data": train_data,
            "test_data": test_data,
        }
        # Only the split settings that differ from the defaults enter the config, so that the runs
        # made before these options existed keep their hashes.
        config.update(self.splits)
        if val_data is not None:
            config["val_data"] = val_data
        return config
