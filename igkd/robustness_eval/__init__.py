"""Chapter 10: every model a reader has, on corrupted copies of the test set, and what the IG
overlay buys in robustness and calibration.

The models: the students of a checkpoint folder (the authors' seven files, either key layout, or
any others), the finished students of the profile in the run cache (named by method and seed) and
the profile's teacher run when it exists (never trained here). The data: the profile's test set
(cut to `test_images`, stratified), its CIFAR-10-C copies (`igkd.corruptions.corrupted_set`,
cached), a JPEG quality sweep and a Gaussian noise sweep in pixel units; all of them on top of the
test images as stored, which for our data is the JPEG q75 copy of CIFAR-10. Temperature scaling is
fitted on a stratified validation split of the training set, never on the test set.

Everything is inference: logits are computed once per (model weights, images) and cached under
`<runs>/cache/logits`, and each model's measurements on all sets are a run-cache record (kind
`robustness`, a few hundred kB) that travels in a results archive, so a rerun, a second table or a
reader with the archive costs nothing. The metrics themselves
(mCE, ECE, the paired bootstrap, Holm) are in `igkd.robustness`.

The package's modules: `setup` (settings, models), `evaluation`, `tables`, `figures`; every name
is reachable as `igkd.robustness_eval.<name>`.
"""

from igkd.profile_runs import RUN_STUDENTS  # noqa: F401 (run_students' choices, also chapter 07's)
from igkd.robustness_eval.evaluation import (  # noqa: F401
    RECORD_KIND,
    Key,
    Result,
    _load_record,
    _measure,
    _save_record,
    _set_name,
    _sets,
    evaluate,
    logits,
    planned_records,
    prepare,
    set_keys,
    test_set,
    val_set,
)
from igkd.robustness_eval.figures import (  # noqa: F401
    _nothing,
    plot_heatmap,
    plot_lines,
    plot_reliability,
    timing,
)
from igkd.robustness_eval.setup import (  # noqa: F401
    CHECKPOINT_SUFFIXES,
    DEFAULTS,
    PUBLISHED,
    RUN_CACHE,
    TEACHER,
    Candidate,
    Settings,
    _ignored,
    _positive_int,
    _short,
    from_folder,
    from_run_cache,
    gather,
    method_of_file,
    model_key,
    model_table,
    settings,
    teacher_of,
)
from igkd.robustness_eval.tables import (  # noqa: F401
    _errors,
    _family_members,
    _groups,
    _with_holm,
    caption,
    curve_table,
    family_bootstrap,
    heatmap_table,
    records,
    reference_for,
    relative_mce,
    rounded,
    seed_comparison,
    severity_table,
    summary_table,
    temperature_table,
)
