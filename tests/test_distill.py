"""Every method and every compression factor trains end to end through the pipeline (tiny data)."""

import pytest
import torch
from conftest import tiny_ci_profile

from igkd import losses, models, pipeline, profiles, train
from igkd.config import StudentConfig
from igkd.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A profile small enough to train a teacher, IG maps and many students in seconds."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("distill")
    mp.setenv("IGKD_RUNS", str(root / "runs"))
    mp.setenv("IGKD_DATA", str(root / "no-data"))
    with tiny_ci_profile(mp, train_size=128, ig_n_steps=2) as name:
        yield name
    mp.undo()


def run(profile, **kwargs):
    with pytest.warns(UserWarning, match="synthetic"):
        return pipeline.student_run(profile=profile, progress=False, **kwargs)


@pytest.mark.parametrize("method", list(losses.PRESETS))
def test_every_method_trains(tiny, method):
    r = run(tiny, compression=4.1, method=method)
    m = r.metrics
    assert m["method"] == method and m["epochs"] == 1 and m["parameters"] == 543_498
    assert 0 <= m["final_test_accuracy"] <= 100
    assert (r.config["ig_run"] is not None) == (losses.PRESETS[method].overlay_prob > 0)
    assert (r.config["teacher_outputs"] is not None) == losses.PRESETS[method].needs_teacher


@pytest.mark.parametrize("compression", list(models.COMPRESSION_TABLE))
def test_every_compression_trains_with_kd_and_at(tiny, compression):
    m = run(tiny, compression=compression, method="KD_AT").metrics
    assert m["compression"] == compression
    assert m["parameters"] == models.COMPRESSION_TABLE[compression].parameters


def test_cached_teacher_outputs_are_the_teachers_on_clean_images(tiny):
    cached = run(tiny, method="KD", teacher_outputs="cached")
    online = run(tiny, method="KD")
    assert cached.path != online.path  # a different setting is a different run
    teacher = pipeline.load_model(pipeline.teacher_run(tiny, progress=False))
    train_ds, _ = pipeline.datasets(profiles.get(tiny))
    logits, attention = train.teacher_outputs(teacher, train_ds, layer=9)
    assert logits.shape == (128, 10) and attention.shape == (128, 64)
    expected = train.predict(teacher, train_ds.images)
    assert torch.allclose(logits, expected, atol=1e-4)


def test_runs_are_reused(tiny, monkeypatch):
    first = run(tiny, method="IG", seed=3)
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained again"))
    assert run(tiny, method="IG", seed=3).path == first.path


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "distill"}, "method='distill'"),
        ({"compression": 3.0}, "compression=3.0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"overlay_prob": 1.5}, "overlay_prob=1.5"),
        ({"teacher_outputs": "live"}, "teacher_outputs='live'"),
        ({"epochs": 0}, "epochs=0"),
    ],
)
def test_bad_settings_stop_before_any_work(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        StudentConfig.of({"profile": "ci", **kwargs})
