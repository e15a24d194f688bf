"""The ImageNet subset aligned with CIFAR-10 (paper.md 7.5): load it from a copy of ImageNet, then
score the students on it.

`load` reads the CIFAR-aligned images of a copy (the downsampled ImageNet 32x32 validation pickle
the paper used, or any ILSVRC-style folder `<wnid>/<file>`, box-resized to 32x32) into a `Subset`.
The pieces live in modules of their own, and their names stay importable from here:
`igkd.imagenet_subset` (the WordNet ID -> CIFAR-10 class map and `Subset`), `igkd.imagenet_files`
(the readers, `find_source` and the generated stand-in folder) and `igkd.imagenet_eval` (the
protocol, `evaluate`: the teacher on all images, the images it gets right, each student on those,
each model fed the input space it was trained on).
"""

from __future__ import annotations

from pathlib import Path

from igkd.errors import ConfigError
from igkd.imagenet_eval import (  # noqa: F401 (re-exported: imagenet.evaluate, ...)
    Scores,
    SubsetEvaluation,
    evaluate,
    model_predictions,
    scores,
    teacher_correct,
)
from igkd.imagenet_files import (  # noqa: F401 (re-exported: imagenet.read_folder, ...)
    DEFAULT_LOCATIONS,
    EXAMPLE_UNMAPPED_WNID,
    GENERATED_MARKER,
    PICKLE_SOURCE,
    WHERE_TO_GET_IT,
    find_source,
    read_class_index,
    read_folder,
    read_pickle,
    to_32,
    write_example_folder,
)
from igkd.imagenet_subset import SYNSETS_CSV, WNID, Subset, Synset, synsets  # noqa: F401

FORMATS = ("auto", "pickle", "folder")


def load(
    source: str | Path,
    format: str = "auto",
    mapping: str | Path | None = None,
    progress: bool = True,
) -> Subset:
    """The CIFAR-aligned subset of an ImageNet copy: `format` 'pickle', 'folder' or 'auto'.

    'auto' reads a file, or a folder holding `val_data`, as the pickle, and any other folder as an
    ILSVRC-style `<wnid>/<file>` tree.
    """
    if format not in FORMATS:
        raise ConfigError(f"format={format!r}; use one of {', '.join(FORMATS)}")
    p = find_source(source)
    if format == "auto":
        format = "pickle" if p.is_file() or (p / "val_data").is_file() else "folder"
    if format == "pickle":
        return read_pickle(p, mapping)
    return read_folder(p, progress=progress)
