"""The ImageNet subset aligned with CIFAR-10 (paper.md 7.5): the WordNet ID -> CIFAR-10 class map
and the `Subset` of images it selects.

The paper evaluates its CIFAR-10 students on ImageNet validation images whose WordNet ID maps to a
CIFAR-10 class (105 synsets of 8 classes; deer and horse have none). The map ships with the package
(`imagenet_cifar10_synsets.csv`). `igkd.imagenet_files` reads copies of ImageNet into a `Subset`;
`igkd.imagenet_eval` scores models on it.
"""

from __future__ import annotations

import csv
import functools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from igkd.data import CIFAR10_CLASSES, Dataset, fingerprint
from igkd.errors import DataNotFoundError

SYNSETS_CSV = Path(__file__).with_name("imagenet_cifar10_synsets.csv")
WNID = re.compile(r"^n\d{8}$")


# --- the WordNet ID -> CIFAR-10 class map ----------------------------------------------------------


@dataclass(frozen=True)
class Synset:
    """One ImageNet class mapped to a CIFAR-10 class."""

    wnid: str  # WordNet ID, e.g. n02690373
    cifar_class: str  # CIFAR-10 class name, e.g. airplane
    label: int  # CIFAR-10 label 0..9
    name: str  # ImageNet class name, e.g. airliner


@functools.lru_cache(maxsize=1)
def synsets() -> dict[str, Synset]:
    """The paper's 105 WordNet IDs by ID (paper.md 7.5), in the order of the shipped CSV."""
    out: dict[str, Synset] = {}
    with open(SYNSETS_CSV, newline="") as f:
        for row in csv.DictReader(f):
            wnid, cls = row["wnid"], row["cifar_class"]
            if not WNID.match(wnid) or cls not in CIFAR10_CLASSES or wnid in out:
                raise DataNotFoundError(f"{SYNSETS_CSV} is damaged at {wnid!r}; reinstall igkd")
            out[wnid] = Synset(wnid, cls, CIFAR10_CLASSES.index(cls), row["imagenet_name"])
    return out


# --- the subset ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Subset:
    """The CIFAR-aligned images of an ImageNet copy, and what was left out on the way.

    `data.images` is (N, 3, 32, 32) uint8 RGB and `data.labels` (N,) the CIFAR-10 labels.
    """

    data: Dataset
    wnids: tuple[str, ...]  # WordNet ID of each image
    names: tuple[str, ...]  # each image's file (relative to the folder) or `val_data[i]`
    ignored: dict[str, int]  # images skipped because their WordNet ID is not in the map, by ID
    unreadable: tuple[str, ...]  # files that could not be decoded (skipped)
    generated: bool = False  # True for write_example_folder's images: never report them as results

    def __len__(self) -> int:
        return len(self.data)

    @property
    def images(self) -> torch.Tensor:
        return self.data.images

    @property
    def labels(self) -> torch.Tensor:
        return self.data.labels

    @property
    def counts(self) -> dict[str, int]:
        """Images per CIFAR-10 class (all ten, deer and horse 0)."""
        n = torch.bincount(self.labels, minlength=len(CIFAR10_CLASSES)).tolist()
        return dict(zip(CIFAR10_CLASSES, n, strict=True))

    @property
    def ignored_images(self) -> int:
        return sum(self.ignored.values())

    def subset(self, indices: torch.Tensor | np.ndarray) -> Subset:
        """The images at `indices` (the skipped-file records are kept)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Subset(
            self.data.subset(idx),
            tuple(self.wnids[i] for i in idx),
            tuple(self.names[i] for i in idx),
            self.ignored,
            self.unreadable,
            self.generated,
        )


def make_subset(
    images: np.ndarray,
    wnids: list[str],
    names: list[str],
    ignored: Counter,
    unreadable: list[str],
    source: str,
    generated: bool = False,
) -> Subset:
    """The `Subset` of `images` (N, 3, 32, 32) uint8 RGB, each labelled with the CIFAR-10 class of
    its mapped WordNet ID in `wnids`; `source` names the data (`Dataset.source`)."""
    smap = synsets()
    labels = torch.tensor([smap[w].label for w in wnids], dtype=torch.int64)
    imgs = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    ds = Dataset(imgs, labels, CIFAR10_CLASSES, source, fingerprint(imgs, labels), "val")
    return Subset(ds, tuple(wnids), tuple(names), dict(ignored), tuple(unreadable), generated)
