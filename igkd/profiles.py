"""The three ways to run everything: `ci` (seconds), `quick` (a 2-core CPU, minutes), `paper` (GPU hours).

Every notebook's parameters cell starts with `profile = os.environ.get("IGKD_PROFILE", "auto")`; any
parameter left as None takes its value from the profile returned by `get(profile)`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from igkd.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    train_size: int | None  # training images used (None = the whole training set)
    test_size: int | None  # test images evaluated (None = the whole test set)
    synthetic_fallback: bool  # use synthetic data when CIFAR-10 is missing (ci only)
    eval_batch_size: int
    teacher_recipe: dict  # keyword arguments of igkd.train.Recipe
    # Integrated gradients for the overlay (igkd.ig_store.precompute_ig), over the training set:
    ig_n_steps: int  # quadrature points per image (the paper: 50, Gauss-Legendre)
    ig_batch_size: int  # images per stored, checkpointed chunk: the work a kill can lose
    ig_chunk_size: int | None  # interpolants per autograd.grad; None = 32 on a CPU, 512 on a GPU
    student_recipe: dict  # keyword arguments of igkd.train.Recipe for students
    # How many runs the experiment notebooks make (04-06, 09) when their parameters say None:
    # ablation_runs (seeds per method), monte_carlo_runs (Train80Rand draws per method),
    # sweep_runs (seeds per method and compression), tuning_trials (Optuna trials); the ci profile
    # also narrows the sweep (sweep_compressions, sweep_methods; absent = the paper's grid), and
    # experiment_epochs / tuning_epochs (absent = the student recipe's) shorten the runs of 04-06 / 09
    # and experiment_data_share (absent = 1) trains them on that share of the training set;
    # ablation_regime (absent: 4.1x, as the other experiments) names the regime of `regimes` that
    # chapter 04's ablation trains in (experiments.ablation_settings);
    # hp_grid_kd / hp_grid_overlay / hp_grid_at are the values per axis of igkd.hp_grids' grids
    # (an int, or {axis: int}; absent = the paper's full grid).
    experiments: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # A misspelled key would otherwise be a silent default: refuse it, naming the known ones.
        for what, given, known in (
            ("teacher_recipe", self.teacher_recipe, RECIPE_FIELDS),
            ("student_recipe", self.student_recipe, RECIPE_FIELDS),
            ("experiments", self.experiments, EXPERIMENT_KEYS),
        ):
            if unknown := sorted(set(given) - set(known)):
                raise ConfigError(
                    f"profile {self.name!r}: unknown {what} key(s) {unknown}; "
                    f"use {', '.join(known)}"
                )

    def replace(self, **changes: object) -> Profile:
        return dataclasses.replace(self, **changes)


# The fields of igkd.train.Recipe (not imported: train imports torch; a test checks they agree).
RECIPE_FIELDS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "schedule",
    "warmup",
    "label_smoothing",
    "normalized",
    "augment",
    "precision",
)
# What a profile's `experiments` may set (see the comment in Profile); the robustness_<name> keys
# override chapter 10's settings (igkd.robustness_eval.DEFAULTS, a test checks they agree).
EXPERIMENT_KEYS = (
    "ablation_runs",
    "ablation_methods",
    "ablation_regime",
    "monte_carlo_runs",
    "monte_carlo_methods",
    "sweep_runs",
    "sweep_compressions",
    "sweep_methods",
    "experiment_epochs",
    "experiment_data_share",
    "tuning_trials",
    "tuning_epochs",
    "fix_ig_steps",
    "fix_runs",
    "hp_grid_kd",
    "hp_grid_overlay",
    "hp_grid_at",
    "regimes",
    "regime_runs",
    "regime_methods",
    "regime_budget_hours",
    "ig_study_images",
    "ig_study_steps",
    "deploy_min_run_time",
    "deploy_warmup",
    "deploy_calibration_images",
    "deploy_published_first",
    "own_train_images",
    "own_epochs",
    "own_ig_steps",
    "explainer_images",
    "explainer_steps",
    "attention_methods",
    "attention_images",
    *(
        f"robustness_{k}"
        for k in (
            "test_images",
            "corruptions",
            "severities",
            "jpeg_qualities",
            "noise_sigmas",
            "val_images",
            "workers",
            "n_boot",
            "backend",
        )
    ),
)


@dataclass(frozen=True)
class Regime:
    """A training regime of the CPU study (notebook 11): a student size, a stratified share of the
    training set (split seed 0, the same images for every run) and an epoch count, with the
    profile's student recipe otherwise."""

    name: str
    compression: str
    data_share: float
    epochs: int

    def label(self) -> str:
        return f"{self.compression}x, {self.epochs} epoch(s) on {self.data_share:.0%} of the data"

    def settings(self) -> dict:
        """`pipeline.student_run` keyword arguments (besides method and seed)."""
        share = {} if self.data_share >= 1 else {"train_fraction": self.data_share, "split_seed": 0}
        return {"compression": self.compression, "epochs": self.epochs, **share}


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        description="seconds per notebook: a small stratified subset, synthetic data if no CIFAR-10",
        # 250 + 250 images: only the code paths are under test here. With 2,000 + 1,000 a ci student
        # run took ~2 min on one thread of a 2-core AVX2 CPU, and CI's ~20 runs ~50 min; with
        # 500 + 500 a KD_IG run still took 25-35 s there (15-20 s of it training), and the ci book
        # makes about 60 runs. Training and scoring cost in proportion to the images.
        train_size=250,
        test_size=250,
        synthetic_fallback=True,
        eval_batch_size=500,
        teacher_recipe=dict(
            epochs=2,
            batch_size=128,
            optimizer="sgd",
            lr=0.05,
            weight_decay=5e-4,
            schedule="warmup_cosine",
            warmup=0.25,
            normalized=True,
        ),
        # 250 images x 1 step (the midpoint rule): seconds, enough to exercise the store and the
        # overlay; two chunks, so a kill between them is exercised too.
        ig_n_steps=1,
        ig_batch_size=125,
        ig_chunk_size=32,
        student_recipe=dict(epochs=1, batch_size=64, optimizer="adam", lr=1e-3),
        # Enough to exercise every code path (paired tests need 2 seeds, the sweep 2 sizes); each
        # ci run costs 15-40 s of CI's budget on 2 cores, so the grids are the smallest that do.
        experiments=dict(
            ablation_runs=2,
            ablation_methods=["student", "KD", "IG", "KD_IG"],
            monte_carlo_runs=2,
            monte_carlo_methods=["student", "KD_IG"],
            sweep_runs=1,
            sweep_compressions=["4.1", "140"],
            sweep_methods=["student", "KD_IG"],
            tuning_trials=2,  # importances need 2; each ci trial is a whole (tiny) run
            # The paper's grids (igkd.hp_grids), values per axis: alpha 0.01 and 0.25 at T 2.5, p 0.1,
            # gamma 0.8 -- four runs, enough to exercise picking the best on validation and on test.
            # Chapter 04's fix ablation: the IG step count's alternative (the profile's is 1), and
            # one seed per arm (no paired test; its statistics are unit-tested): its 12 runs at 2
            # seeds made chapter 04 take 20 of the ci book's 45 one-thread minutes on an AVX2 CPU.
            fix_ig_steps=2,
            fix_runs=1,
            hp_grid_kd={"alpha": 2, "temperature": 1},
            hp_grid_overlay=1,
            hp_grid_at=1,
            # The regime study (notebook 11) on the same tiny set: the 4.1x one reuses the
            # ablation's runs, the 140x one the sweep's; only the code paths are under test.
            regimes=(Regime("4.1x-1ep", "4.1", 1.0, 1), Regime("140x-1ep", "140", 1.0, 1)),
            regime_runs=2,
            regime_methods=["student", "KD_IG"],
            regime_budget_hours=0.1,
            # Chapter 02's convergence study and chapter 08's timings, shortened to seconds; chapter
            # 08 deploys the published student when it is on disk (a ci run is at chance, so fp32
            # and int8 predictions could not be told apart).
            ig_study_images=4,
            ig_study_steps=(2, 4, 8),
            deploy_min_run_time=0.05,
            deploy_warmup=1,
            deploy_calibration_images=64,
            deploy_published_first=True,
            # Chapter 12 (your own models): the ci set, 1 epoch, 1 IG step: the code paths only.
            own_epochs=1,
            own_ig_steps=1,
            # Chapter 02's attribution methods on 2 images at 4 steps / 4 noisy copies (the paper:
            # 50; ~7 s per image for all five at 50 on one thread of the 2-core AVX2 CPU), and
            # chapter 13's attention maps with one AT student (each ci run costs ~20 s) on 200
            # test images (each model's pass over 500 took ~6 s there).
            explainer_images=2,
            explainer_steps=4,
            attention_methods=["KD_IG_AT"],
            attention_images=200,
        ),
    ),
    "quick": Profile(
        name="quick",
        description="real CIFAR-10 on a 2-core CPU: tens of minutes per chapter, hours per book",
        train_size=None,
        test_size=None,
        synthetic_fallback=False,
        eval_batch_size=500,
        # One-cycle SGD: >= 80 % test accuracy in about 25 minutes on a 2-core AVX512-BF16 CPU.
        teacher_recipe=dict(
            epochs=6,
            batch_size=128,
            optimizer="sgd",
            lr=0.2,
            weight_decay=5e-4,
            schedule="warmup_cosine",
            warmup=0.25,
            normalized=True,
        ),
        # All 50,000 training images at 6 Gauss-Legendre steps (300,000 interpolants): about
        # 17 minutes at ~300 interpolants/s on the 2-core reference CPU, where 50 steps would take
        # 2.5 hours. On the quick teacher 6 steps leave a median completeness error of ~15 % of
        # F(x) - F(x') (50 steps: ~1 %), but the min-max-normalised maps the overlay uses differ
        # from 200-step maps by only ~0.01 per pixel on average (50 steps: ~0.001).
        ig_n_steps=6,
        ig_batch_size=500,
        ig_chunk_size=32,
        # Students in about 12 minutes each here: 3 epochs of Adam with a cosine decay so that a
        # short run still ends converged; batch 64 and [0, 1] inputs as in the paper.
        student_recipe=dict(
            epochs=3,
            batch_size=64,
            optimizer="adam",
            lr=1e-3,
            schedule="warmup_cosine",
            warmup=0.05,
        ),
        # The experiments' runs are 1-epoch students on a fixed stratified 20 % of the training
        # set (10,000 images; the Monte Carlo draws 80 % of that per run, tuning holds out 10 %
        # first): ~3 min each on one core of a 2-core AVX512 CPU, two at a time (IGKD_WORKERS=2).
        # On all 50,000 images a 1-epoch run took ~4 min on the reference CPU but ~14 min on one
        # core of a slower 2-core CPU, which put the quick book (teacher, IG maps, notebook 03's
        # 3-epoch student, then 12 + 6 + 4 + 4 experiment runs) past 5 hours there. The grids are
        # narrowed too: the ablation to the four methods that separate KD from IG (3 seeds), the
        # Monte Carlo to student vs KD_IG (3 draws), the sweep to three sizes (4.1x is the
        # ablation's), tuning to 4 one-epoch trials.
        experiments=dict(
            ablation_runs=3,
            ablation_methods=["student", "KD", "IG", "KD_IG"],
            # The ablation trains where chapter 11's regime study found the narrowest confidence
            # interval on KD_IG - student at 3 seeds: the 4.1x student, 20 epochs on a fixed 5 %
            # (2,500 images), close to convergence, which is where the paper's claim lives. It
            # displaced the 140x regime (10 epochs on 20 %) once its third KD_IG seed landed
            # (session 17; the table is in chapter 11 and results/README.md). A departure from
            # the paper's recipe (all 50,000 images), which the chapter and the summary name. Its
            # 12 runs take about 7 CPU-hours, over the study's 2-hour budget (chapter 11 says so);
            # the other experiments stay at 1 epoch on 20 %.
            ablation_regime="4.1x-5%-20ep",
            monte_carlo_runs=3,
            monte_carlo_methods=["student", "KD_IG"],
            sweep_runs=1,
            sweep_compressions=["4.1", "29", "1122"],
            sweep_methods=["student", "KD_IG"],
            experiment_epochs=1,
            experiment_data_share=0.2,
            tuning_trials=4,
            tuning_epochs=1,
            # The paper's grids coarsely (igkd.hp_grids.coarse, values per axis): alpha 0.0005,
            # 0.01, 0.25 x T 2.5, 4 (6 of 45), p 0.05, 0.1, 0.75 and gamma 0.1, 0.8: 11 runs.
            # Chapter 04's fix ablation: the IG step count's alternative to the profile's 6. Its
            # stores (2 steps; the black baseline) cover only the 20 % its runs train on
            # (pipeline.own_ig_store): a fifteenth and a fifth of the profile's store's cost.
            fix_ig_steps=2,
            hp_grid_kd={"alpha": 3, "temperature": 2},
            hp_grid_overlay=3,
            hp_grid_at=2,
            # The regime study (notebook 11): today's 1 epoch on 20 %, more epochs on the same
            # 20 %, a small 5 % subset trained to convergence, and a much smaller student.
            regimes=(
                Regime("4.1x-20%-1ep", "4.1", 0.2, 1),
                Regime("4.1x-20%-5ep", "4.1", 0.2, 5),
                Regime("4.1x-5%-20ep", "4.1", 0.05, 20),
                Regime("140x-20%-10ep", "140", 0.2, 10),
            ),
            regime_runs=3,
            regime_methods=["student", "KD_IG"],
            # Training CPU-hours the quick ablation (4 methods) may take within the ~4 h book.
            regime_budget_hours=2.0,
            # Chapter 10 on a stratified 1,000 of the 10,000 test images: the seven published
            # students at all 19 x 5 corruptions and both sweeps took 19 min in all on a 2-core
            # AVX2 EPYC (ONNX Runtime, 758 img/s); all 10,000 would take about 3 hours there.
            # Family CI about +-0.7 pp.
            robustness_test_images=1000,
            # Chapter 12: small CNNs on a stratified 10,000 training images, 8 epochs each, IG at
            # 8 steps: a few minutes on 2 cores.
            own_train_images=10_000,
            own_epochs=8,
            own_ig_steps=8,
        ),
    ),
    "paper": Profile(
        name="paper",
        description=(
            "the paper's recipe: full data, 100 epochs, its hyperparameters, fp32 "
            "(its experiment with TEACHER= the authors' teacher file)"
        ),
        train_size=None,
        test_size=None,
        synthetic_fallback=False,
        eval_batch_size=500,
        # huyvnphan/PyTorch_CIFAR10's recipe for the published weights (paper.md 1.1): 93.91 %.
        teacher_recipe=dict(
            epochs=100,
            batch_size=256,
            optimizer="sgd",
            lr=1e-2,
            weight_decay=1e-2,
            schedule="warmup_cosine",
            warmup=0.3,
            normalized=True,
            precision="fp32",
        ),
        ig_n_steps=50,  # the paper's (Captum's default), on all 50,000 training images
        ig_batch_size=1000,
        ig_chunk_size=None,
        # The paper's student recipe (paper.md 5): Adam 1e-3, no schedule, batch 64, 100 epochs.
        # fp32, as the paper trained (on CUDA `auto` would mean fp16 AMP); IGKD_PRECISION=amp
        # (or `make book PRECISION=amp`) is the named mixed-precision option.
        student_recipe=dict(epochs=100, batch_size=64, optimizer="adam", lr=1e-3, precision="fp32"),
        # The paper's counts (paper.md 7.2-7.4, 6); its sweep's run count is unclear, 3 is ours.
        experiments=dict(
            ablation_runs=10,
            monte_carlo_runs=60,
            sweep_runs=3,
            tuning_trials=100,
            fix_ig_steps=16,  # the fix ablation's alternative to the paper's 50 IG points
        ),
    ),
}


def resolve(name: str | None = None) -> str:
    """The concrete profile name: `auto` (the default) is `paper` on CUDA and `quick` otherwise."""
    name = name or os.environ.get("IGKD_PROFILE", "auto")
    if name == "auto":
        import torch

        return "paper" if torch.cuda.is_available() else "quick"
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of auto, {', '.join(PROFILES)}")
    return name


# $IGKD_PRECISION, when set, replaces the precision of every profile's teacher and student recipes
# (so it is part of every run's cache key): fp32, amp (fp16 autocast with loss scaling on CUDA),
# bf16 (autocast) or auto (amp on CUDA, bf16 on CPUs with native bf16, else fp32).
PRECISION_ENV = "IGKD_PRECISION"
PRECISIONS = {"fp32": "fp32", "amp": "fp16", "fp16": "fp16", "bf16": "bf16", "auto": "auto"}


def precision_override() -> str | None:
    """The recipe precision $IGKD_PRECISION asks for, or None when unset; ConfigError if unknown."""
    name = os.environ.get(PRECISION_ENV, "").strip().lower()
    if not name:
        return None
    if name not in PRECISIONS:
        raise ConfigError(f"{PRECISION_ENV}={name!r}; use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def get(name: str | None = None) -> Profile:
    """The settings of profile `name` (`ci`, `quick`, `paper` or `auto`; default $IGKD_PROFILE),
    with $IGKD_PRECISION applied to its recipes."""
    prof = PROFILES[resolve(name)]
    if (precision := precision_override()) is not None:
        prof = prof.replace(
            teacher_recipe={**prof.teacher_recipe, "precision": precision},
            student_recipe={**prof.student_recipe, "precision": precision},
        )
    return prof


def environment(profile: str | None = None, seed: int | None = None) -> dict[str, object]:
    """What a result depends on besides its config: profile, seed, device, threads, versions, git.

    Recorded in every run's metadata and printed at the top of every notebook.
    """
    import platform

    import torch

    import igkd
    from igkd.paths import git_revision
    from igkd.precision import resolve_precision
    from igkd.teachers import given as given_teacher

    rev = git_revision()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    return {
        "profile": resolve(profile),
        # What the students' recipe trains in here (auto resolved for this machine).
        "precision": resolve_precision(
            get(profile).student_recipe.get("precision", "auto"), device
        ),
        # The teacher students distil from: a given file ($IGKD_TEACHER) or the profile's own run.
        "teacher": given_teacher() or "the profile's own teacher run",
        "seed": seed,
        "device": torch.cuda.get_device_name(0)
        if cuda
        else f"cpu ({platform.processor() or platform.machine()})",
        "threads": torch.get_num_threads(),
        "igkd": igkd.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git": rev[:7] if rev else "unknown",
    }
