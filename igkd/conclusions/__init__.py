""" "What this shows": the closing paragraph of each result chapter, written from its own numbers.

Nothing here states a result: every sentence is assembled from the numbers passed in, so a chapter
run on other data, another profile or more seeds says something else. Each function returns
Markdown; notebooks show it with `IPython.display.Markdown`. Verdicts on the paper's claims follow
one rule (`verdict`): a claim held when the 95 % CI of our difference excludes 0 on the paper's
side, was reversed when it excludes 0 on the other side, and is not settled otherwise; a
not-settled verdict says how many paired seeds the observed scatter would need
(`stats.seeds_needed`).
Differences whose runs do not scatter at all (identical accuracies, as tiny profiles give) have no
t-test; they are reported as not settled, with that reason.

One function per chapter (in `single`, `grids` and `beyond`; the shared pieces in `_core`): `published` (00), `teacher` (01), `integrated_gradients` (02),
`single_run` (03), `ablation` (04), `monte_carlo` (05), `sweep` (06), `imagenet` (07),
`deployment` (08), `hyperparameters` and `hyperparameter_grids` (09, in `hp_grids`), and `summary` for the book's summary page. Numbers are
rounded to 4 significant digits (`sig`), p-values to 3.
"""

# Everything, private helpers included, stays reachable as igkd.conclusions.<name>.
from igkd.conclusions._core import (  # noqa: F401
    CHANCE_MARGIN,
    CONFIDENCE,
    IG_FREE,
    WITH_IG,
    _chance_note,
    _compare_all,
    _degenerate,
    _difference_sd,
    _focus_first,
    _missing,
    _names,
    _nan,
    _p,
    _seeds_needed,
    comparison,
    power_sentence,
    sig,
    signed,
    spearman,
    verdict,
    wilson,
)
from igkd.conclusions.beyond import (  # noqa: F401
    deployment,
    hyperparameters,
    imagenet,
    own_models,
    summary,
)
from igkd.conclusions.grids import (  # noqa: F401
    _paper_reproduction,
    _trends,
    ablation,
    monte_carlo,
    sweep,
    trend,
)
from igkd.conclusions.hp_grids import hyperparameter_grids  # noqa: F401
from igkd.conclusions.single import (  # noqa: F401
    integrated_gradients,
    paper_accuracy,
    published,
    single_run,
    teacher,
)
