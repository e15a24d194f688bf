"""Shared fixtures: tiny CIFAR-10 copies in both layouts, the real data. The session's profile (ci
unless IGKD_PROFILE is set) and its isolated run cache are set by the repository's conftest.py."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from igkd import data, profiles
from igkd.errors import DataNotFoundError

SHARED = Path(__file__).resolve().parents[2] / "shared"


@contextmanager
def tiny_ci_profile(
    mp: pytest.MonkeyPatch, train_size: int = 200, ig_n_steps: int = 1, **student: object
) -> Iterator[str]:
    """The ci profile cut to a few hundred synthetic images, so that a teacher, IG maps and students
    take seconds; `student` overrides the student recipe (1 epoch of Adam 1e-3, batch 32). Yields
    the profile name. One torch thread meanwhile: on a loaded 2-core machine more are slower."""
    ci = profiles.PROFILES["ci"]
    mp.setitem(
        profiles.PROFILES,
        "ci",
        ci.replace(
            train_size=train_size,
            test_size=min(100, train_size // 2),
            teacher_recipe={**ci.teacher_recipe, "epochs": 1, "batch_size": 64},
            student_recipe={
                "epochs": 1,
                "batch_size": 32,
                "optimizer": "adam",
                "lr": 1e-3,
                **student,
            },
            ig_n_steps=ig_n_steps,
            ig_batch_size=100,
        ),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield "ci"
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def threads_client():
    """A Dask cluster of two worker threads in this process, so that monkeypatches (such as
    tiny_ci_profile) reach the tasks."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected what they will
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Execute each notebook once per session. When the book test runs (Chromium is here), its
    fixture executes every notebook in the ci profile with papermill, which fails on any cell's
    error just as nbval does on these output-free notebooks; nbval's second execution of the same
    notebooks is then deselected (it was a third of CI's work). IGKD_NBVAL_ALWAYS=1 keeps both."""
    from igkd import book

    if os.environ.get("IGKD_NBVAL_ALWAYS") == "1" or book.find_chromium() is None:
        return
    if not any(item.nodeid.startswith("tests/test_book.py::test_every_chapter") for item in items):
        return
    notebooks = [item for item in items if item.nodeid.split("::")[0].endswith(".ipynb")]
    if notebooks:
        config.hook.pytest_deselected(items=notebooks)
        items[:] = [item for item in items if item not in notebooks]


def _tiny_arrays(n_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    return images, labels


@pytest.fixture
def imagefolder_cifar(tmp_path):
    """A CIFAR-10 ImageFolder copy with 3 PNGs per class and split; returns (root, arrays)."""
    root = tmp_path / "data"
    arrays = {}
    for split, seed in (("train", 0), ("test", 1)):
        images, labels = _tiny_arrays(3, seed)
        arrays[split] = (images, labels)
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            d = root / "cifar10" / split / data.CIFAR10_CLASSES[y]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i:04d}.png")
    return root, arrays


@pytest.fixture
def torchvision_cifar(tmp_path):
    """A CIFAR-10 copy in torchvision's pickled layout; returns (root, arrays)."""
    root = tmp_path / "tv"
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    arrays = {}
    train = [_tiny_arrays(1, seed) for seed in range(5)]
    for i, (images, labels) in enumerate(train, start=1):
        batch = {b"data": images.reshape(len(images), -1), b"labels": labels.tolist()}
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    arrays["train"] = tuple(np.concatenate(x) for x in zip(*train, strict=True))
    images, labels = _tiny_arrays(2, 9)
    (d / "test_batch").write_bytes(
        pickle.dumps({b"data": images.reshape(len(images), -1), b"labels": labels.tolist()})
    )
    arrays["test"] = (images, labels)
    return root, arrays


def require_data() -> bool:
    """Tests on the real CIFAR-10 skip without it, except where IGKD_REQUIRE_DATA=1 (CI)."""
    return os.environ.get("IGKD_REQUIRE_DATA") == "1"


@pytest.fixture(scope="session")
def cifar10_test():
    """The real CIFAR-10 test set from $IGKD_DATA."""
    try:
        return data.load_cifar10("test", download=False)
    except DataNotFoundError as e:
        if require_data():
            raise
        pytest.skip(f"no CIFAR-10 here ({e})")


@pytest.fixture(scope="session")
def published_dir() -> Path:
    """The authors' published students: $IGKD_CHECKPOINTS or ../shared beside the repo."""
    d = Path(os.environ.get("IGKD_CHECKPOINTS", SHARED / "checkpoints" / "paper-ablation"))
    if not d.is_dir():
        if require_data():
            raise FileNotFoundError(f"no published checkpoints at {d}")
        pytest.skip(f"no published checkpoints at {d}")
    return d
