"""The paper's hyperparameter grids (paper.md 6), re-run through the run cache and scored on a
validation split of the training set.

The paper chose its distillation weights by grid search scored on the **test** set: alpha x T for
KD (45 runs at 4.1x), then the overlay probability p and the AT weight gamma. Here every grid point
is a student run with `val_fraction` of the training set held out (`StudentConfig.val_fraction`);
its validation accuracy picks the best point, and its test accuracy is recorded beside it only to
show what choosing on the test set (as the paper did) would have picked::

    from igkd import hp_grids
    grid = hp_grids.for_profile("kd", "quick")      # the quick profile's coarse subset
    tables = hp_grids.run([grid], profile="quick")  # {"kd": a row per point: weights, val/test %}
    hp_grids.best_points(tables["kd"])              # {"validation": row, "test": row}

`GRIDS` holds the full grids; a profile's experiment key `hp_grid_<name>` (igkd/profiles.py) sets
how many values of each axis it runs (`coarse`): ci a few points, quick a coarse subset, paper
(absent) the full grid. The figures are in `igkd.hp_grid_figures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from igkd.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from distributed import Client

# The weights the paper chose (paper.md 4 and 6; igkd.losses.PRESETS uses the same values).
CHOSEN = {"alpha": 0.01, "temperature": 2.5, "overlay_prob": 0.1, "gamma": 0.8}
# Columns of a grid's result table (`run`), besides the grid's axes.
VAL, TEST = "val_accuracy", "test_accuracy"
AXIS_LABELS = {"alpha": "alpha", "temperature": "T", "overlay_prob": "p", "gamma": "gamma"}


@dataclass(frozen=True)
class Grid:
    """One hyperparameter grid: the preset `method` whose weights `axes` vary (every combination),
    the paper's chosen point, and where the values come from."""

    name: str
    method: str  # a losses.PRESETS name; the axes override its weights
    axes: dict[str, tuple[float, ...]]  # StudentConfig weight -> values, ascending
    source: str  # where the grid comes from
    note: str = ""  # what is uncertain, or chosen here
    chosen: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chosen", {k: CHOSEN[k] for k in self.axes})

    @property
    def size(self) -> int:
        """Number of points (runs per seed)."""
        return int(np.prod([len(v) for v in self.axes.values()]))

    def points(self) -> list[dict[str, float]]:
        """Every combination of the axes' values, the first axis slowest."""
        import itertools

        names = list(self.axes)
        return [dict(zip(names, p, strict=True)) for p in itertools.product(*self.axes.values())]

    def subset(self, sizes: int | Mapping[str, int] | None) -> Grid:
        """The grid with `coarse(values, n)` of each axis: `sizes` an int for every axis or
        {axis: n}; None (or an axis left out) keeps the axis whole."""
        if sizes is None:
            return self
        if isinstance(sizes, Mapping):
            if unknown := sorted(set(sizes) - set(self.axes)):
                raise ConfigError(
                    f"grid {self.name!r} has no axis {unknown}; its axes: {', '.join(self.axes)}"
                )
            per = dict(sizes)
        else:
            per = dict.fromkeys(self.axes, sizes)
        axes = {k: coarse(v, per.get(k), self.chosen[k]) for k, v in self.axes.items()}
        return Grid(self.name, self.method, axes, self.source, self.note)


# The paper's grids (paper.md 6; KD: the authors' param_search.py and Tuned_KD_param_search.ipynb).
GRIDS: dict[str, Grid] = {
    "kd": Grid(
        "kd",
        "KD",
        {
            "alpha": (0.0005, 0.005, 0.01, 0.025, 0.05, 0.075, 0.09, 0.1, 0.25),
            "temperature": (1.5, 2.0, 2.5, 3.0, 4.0),
        },
        source="paper.md 6: the final KD grid, 45 runs with the 4.1x student",
    ),
    "overlay": Grid(
        "overlay",
        "KD_IG",
        {"overlay_prob": (0.05, 0.1, 0.25, 0.5, 0.75)},
        source="paper.md 3 and 6: p = 0.1 best, values above 0.25 said to hurt",
        note=(
            "the paper's p grid is not known (probably 0.1, 0.25, 0.5, 0.75; paper.md 3); ours adds "
            "0.05 so that the chosen 0.1 is not at the grid's edge, and varies p in KD_IG (alpha "
            "0.01, T 2.5), the method the paper's p results are about"
        ),
    ),
    "at": Grid(
        "at",
        "KD_IG_AT",
        {"gamma": (0.1, 0.25, 0.5, 0.75, 0.8, 0.9)},
        source="paper.md 6: the commented grid 0.1, 0.25, 0.5, 0.75, 0.9; 0.8 chosen",
        note=(
            "0.8 was presumably added to the commented grid later (paper.md 6); gamma varies in "
            "KD_IG_AT (the run directory AT_param/KD_IG_AT_0.8)"
        ),
    ),
}
# The paper's KD grid on the test set (paper.md 6, from the authors' notebook): 45 runs.
PAPER_KD_GRID = {
    "runs": 45,
    "mean": 91.89,
    "sd": 0.453,
    "min": 90.01,
    "q1": 91.82,
    "median": 92.04,
    "q3": 92.16,
    "max": 92.29,
    "best": {"alpha": 0.01, "temperature": 2.5},
}


def get(name: str) -> Grid:
    """The full grid `name` (kd, overlay or at)."""
    if name not in GRIDS:
        raise ConfigError(f"unknown hyperparameter grid {name!r}; use one of {', '.join(GRIDS)}")
    return GRIDS[name]


def coarse(values: Sequence[float], n: int | None, chosen: float) -> tuple[float, ...]:
    """`n` of `values` (ascending): the paper's `chosen` value and n - 1 others spread evenly over
    the rest, both ends first (one other: the value farthest from the chosen one). None or
    n >= len(values) keeps them all."""
    values = tuple(values)
    if n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= len(values)):
        return values
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"grid size {n!r}; use a positive integer (values per axis) or None")
    if chosen not in values:
        raise ConfigError(f"chosen value {chosen!r} is not among {values}")
    c = values.index(chosen)
    others = [i for i in range(len(values)) if i != c]
    if n == 1:
        keep = []
    elif n == 2:
        keep = [max(others, key=lambda i: (abs(i - c), i))]
    else:
        keep = [others[int(round(j))] for j in np.linspace(0, len(others) - 1, n - 1)]
    return tuple(values[i] for i in sorted({c, *keep}))


def for_profile(
    name: str, profile: str | None = None, sizes: int | Mapping[str, int] | None = None
) -> Grid:
    """Grid `name` as profile `profile` runs it: `sizes` if given, else the profile's
    `hp_grid_<name>` experiment key (values per axis), else the full grid."""
    from igkd import experiments

    grid = get(name)
    return grid.subset(experiments.setting(f"hp_grid_{name}", profile, sizes, None))


def configs(
    grid: Grid,
    *,
    compression: float | str = 4.1,
    profile: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    epochs: int | None = None,
    train_fraction: float = 1.0,
    **fixed: object,
) -> list:
    """One `StudentConfig` per point of `grid`: its method with the point's weights, `val_fraction`
    of the training set held out (the same stratified split for every point: split seed `seed`),
    trained on `train_fraction` of the rest. `fixed`: other StudentConfig fields."""
    from igkd.config import StudentConfig

    if not (isinstance(val_fraction, float) and 0 < val_fraction < 1):
        raise ConfigError(
            f"val_fraction={val_fraction!r}; a grid is scored on a fraction in (0, 1)"
        )
    return [
        StudentConfig.of(
            compression,
            method=grid.method,
            profile=profile,
            seed=seed,
            val_fraction=val_fraction,
            epochs=epochs,
            train_fraction=train_fraction,
            **fixed,
            **point,
        )
        for point in grid.points()
    ]


def run(
    grids: Sequence[Grid],
    *,
    profile: str | None = None,
    client: Client | None = None,
    progress: bool = True,
    **settings: object,
) -> dict[str, pd.DataFrame]:
    """Run every point of every grid in `grids` (`configs(grid, **settings)`) in one
    `sweep.run_many` call, each run tagged purpose "tuning" with its grid's name; returns
    {grid name: `table` of its results}."""
    from igkd import sweep
    from igkd.config import purpose

    if isinstance(grids, Grid) or not grids:
        raise ConfigError("grids must be a non-empty list of Grids (hp_grids.for_profile(name))")
    batches, everything = {}, []
    for grid in grids:
        cs = configs(grid, profile=profile, **settings)
        tag = purpose(
            "tuning",
            cs[0].profile,
            grid=grid.name,
            axes={k: list(v) for k, v in grid.axes.items()},
            **{k: v for k, v in settings.items() if k in ("seed", "val_fraction", "epochs")},
        )
        batches[grid.name] = (grid, len(everything), len(cs))
        everything += [{**c.kwargs(), "purpose": tag} for c in cs]
    results = sweep.run_many(everything, client, progress=progress)
    return {
        name: table(grid, results[start : start + n]) for name, (grid, start, n) in batches.items()
    }


def table(grid: Grid, results: Sequence[Mapping]) -> pd.DataFrame:
    """One row per point of `grid` (in `grid.points()` order, as `run_many` returns them): the
    axes' values, final-epoch validation and test accuracy (%), validation images, data source,
    status and run path."""
    import pandas as pd

    points = grid.points()
    if len(results) != len(points):
        raise ConfigError(f"{len(results)} results for the {len(points)} points of {grid.name!r}")
    rows = []
    for point, r in zip(points, results, strict=True):
        rows.append(
            {
                **point,
                VAL: r.get("final_val_accuracy", np.nan),
                TEST: r.get("final_test_accuracy", np.nan),
                "val_images": r.get("val_images"),
                "data": r.get("data"),
                "status": r.get("status"),
                "run_path": r.get("run_path"),
            }
        )
    out = pd.DataFrame(rows)
    out.attrs["grid"] = grid.name
    return out


def best_points(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """{"validation": the row best on validation, "test": the row best on test} of a result
    table (ties: the first in grid order; rows without a score are skipped). Empty when no row
    has both scores."""
    done = frame.dropna(subset=[VAL, TEST])
    if done.empty:
        return {}
    return {"validation": done.loc[done[VAL].idxmax()], "test": done.loc[done[TEST].idxmax()]}


def best_table(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per grid: the point best on validation beside the point best on test (as the paper chose)
    and the paper's choice, with both accuracies (%) of each; the KD grid's paper column holds
    the paper's best test accuracy (92.29 %)."""
    import pandas as pd

    rows = []
    for name, frame in frames.items():
        grid = get(name)
        best = best_points(frame)
        for label, key in (("best on validation", "validation"), ("best on test", "test")):
            if key not in best:
                continue
            row = best[key]
            rows.append(
                {
                    "grid": name,
                    "pick": label,
                    **{AXIS_LABELS[k]: row[k] for k in grid.axes},
                    "validation (%)": row[VAL],
                    "test (%)": row[TEST],
                }
            )
        chosen = frame
        for k, v in grid.chosen.items():
            chosen = chosen[np.isclose(chosen[k], v)]
        ours = chosen.iloc[0] if len(chosen) else None
        rows.append(
            {
                "grid": name,
                "pick": "paper's choice (on test)",  # our accuracies at the paper's point
                **{AXIS_LABELS[k]: v for k, v in grid.chosen.items()},
                "validation (%)": ours[VAL] if ours is not None else np.nan,
                "test (%)": ours[TEST] if ours is not None else np.nan,
                "paper's test (%)": PAPER_KD_GRID["max"] if name == "kd" else np.nan,
            }
        )
    out = pd.DataFrame(rows)
    axes = [a for a in AXIS_LABELS.values() if a in out.columns]
    rest = [c for c in ("validation (%)", "test (%)", "paper's test (%)") if c in out.columns]
    return out[["grid", "pick", *axes, *rest]].round(4)


def kd_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The KD grid's accuracies (%) over its points: ours on validation and on test beside the
    paper's 45 runs on test (n, mean, sd, min, quartiles, max and the point at the max)."""
    import pandas as pd

    def row(values: pd.Series, best: pd.Series | None) -> dict:
        v = values.dropna()
        q = v.quantile([0.25, 0.5, 0.75]) if len(v) else pd.Series([np.nan] * 3)
        return {
            "n": len(v),
            "mean": v.mean(),
            "sd": v.std(ddof=1) if len(v) >= 2 else np.nan,
            "min": v.min(),
            "q1": q.iloc[0],
            "median": q.iloc[1],
            "q3": q.iloc[2],
            "max": v.max(),
            "at": _point_text(best) if best is not None else "",
        }

    best = best_points(frame)
    p = PAPER_KD_GRID
    rows = {
        "ours, validation": row(frame[VAL], best.get("validation")),
        "ours, test": row(frame[TEST], best.get("test")),
        "paper, test": {
            **{k: p[k] for k in ("mean", "sd", "min", "q1", "median", "q3", "max")},
            "n": p["runs"],
            "at": _point_text(p["best"]),
        },
    }
    out = pd.DataFrame.from_dict(rows, orient="index")
    return out[["n", "mean", "sd", "min", "q1", "median", "q3", "max", "at"]].round(4)


def _point_text(point: Mapping) -> str:
    return ", ".join(f"{AXIS_LABELS[k]} {point[k]:g}" for k in ("alpha", "temperature"))
