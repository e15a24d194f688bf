"""The `paper` profile's path cannot rot on CPU-only machines: its recipes run as they are (Adam 1e-3,
batch 64, constant lr; the teacher's SGD recipe; IG at the profile's 50 Gauss-Legendre points; all
eight methods; AT at features[9] for 4.1x), cut only in size (64 training images, 1-2 epochs), on
the real CIFAR-10 through the same pipeline a GPU run uses."""

from __future__ import annotations

import math

import pytest
import torch

from igkd import data, losses, models, pipeline, profiles
from igkd.config import StudentConfig
from igkd.errors import DataNotFoundError
from tests.conftest import require_data


@pytest.fixture
def tiny_paper(monkeypatch):
    try:
        data.load_cifar10("test", download=False)
    except DataNotFoundError as e:
        if require_data():
            raise
        pytest.skip(f"no CIFAR-10 here ({e})")
    paper = profiles.PROFILES["paper"]
    monkeypatch.setitem(
        profiles.PROFILES,
        "paper",
        paper.replace(
            train_size=64,
            test_size=40,
            teacher_recipe={**paper.teacher_recipe, "epochs": 1},
            student_recipe={**paper.student_recipe, "epochs": 2},
        ),
    )
    monkeypatch.delenv(profiles.PRECISION_ENV, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield paper
    torch.set_num_threads(threads)


def test_paper_recipe_runs_as_it_is_for_every_method(tiny_paper):
    c = StudentConfig(4.1, "KD_IG_AT", profile="paper")
    assert models.attention_layer(c.row.layers_removed) == 9  # features[9], as the paper taps
    ig = pipeline.ig_run("paper", progress=False)
    assert ig.config["n_steps"] == tiny_paper.ig_n_steps and ig.config["method"] == "gausslegendre"
    accuracies = {}
    for method in losses.PRESETS:
        run = pipeline.student_run(c.replace(method=method), progress=False)
        m = run.metrics
        recipe = m["settings"]["recipe"]
        # The paper's student recipe, untouched but for the epochs.
        assert {k: v for k, v in recipe.items() if k != "epochs"} == {
            k: v
            for k, v in pipeline.train.Recipe(**tiny_paper.student_recipe).__dict__.items()
            if k != "epochs"
        }
        assert m["precision"] == "fp32" and m["epochs"] == 2 and m["train_images"] == 64
        accuracies[method] = m["final_test_accuracy"]
        assert math.isfinite(accuracies[method])
    assert set(accuracies) == set(losses.PRESETS) and len(accuracies) == 8
