import shutil
import urllib.error

import pytest
import torch

from igkd import models
from igkd.errors import CheckpointError, ConfigError


def test_teacher_parameters_and_shapes():
    net = models.teacher()
    assert models.count_parameters(net) == models.TEACHER_PARAMETERS == 2_236_682
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert len(net.features) == 19
    assert "classifier.1.weight" in net.state_dict()


@pytest.mark.parametrize("row", models.COMPRESSION_TABLE.values(), ids=lambda r: r.label)
def test_every_student_matches_the_paper_table(row):
    net = models.student(compression=row.label)
    assert models.count_parameters(net) == row.parameters
    assert len(net.features) == 19 - row.layers_removed
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert models.student(layers_removed=row.layers_removed).compression == row.label
    # the exact ratio to two decimals names the same student
    assert models.compression_row(round(row.ratio, 2)) is row


def test_paper_ratios_and_sizes():
    row = models.COMPRESSION_TABLE["4.1"]
    assert row.ratio == pytest.approx(4.1153, abs=1e-4)
    assert row.fp32_mb == pytest.approx(2.07, abs=0.01)
    assert models.COMPRESSION_TABLE["1122"].ratio == pytest.approx(1121.71, abs=0.01)


@pytest.mark.parametrize("bad", [3.0, 4.0, 0, -1, "abc", None])
def test_unknown_compression_is_a_clear_error(bad):
    with pytest.raises(ConfigError) as e:
        models.student(compression=bad) if bad is not None else models.student()
    if bad is not None:
        assert repr(bad) in str(e.value) and "4.1 (4.12)" in str(e.value)


def test_layers_removed_validation():
    with pytest.raises(ConfigError, match="layers_removed=4"):
        models.student(layers_removed=4)


def test_attention_taps_follow_the_divider_rule():
    assert models.attention_layer(5) == 9
    assert [
        models.attention_layer(r.layers_removed) for r in models.COMPRESSION_TABLE.values()
    ] == [
        9,
        9,
        9,
        4,
        4,
        4,
        2,
        0,
    ]
    net = models.student(4.1)
    keys = list(net.state_dict())
    logits, feats = models.tapped(net, torch.rand(3, 3, 32, 32), 9)
    assert logits.shape == (3, 10) and feats.shape == (3, 64, 8, 8)
    assert list(net.state_dict()) == keys  # no renaming, no hook left behind
    assert not net.features[9]._forward_hooks
    _, feats = models.tapped(models.teacher(), torch.rand(1, 3, 32, 32), 9)
    assert feats.shape == (1, 64, 8, 8)


def test_both_published_layouts_load(published_dir):
    plain = models.load_published("KD", published_dir)
    at = models.load_published("KD_IG_AT", published_dir)
    for net in (plain, at):
        assert isinstance(net, models.Student) and net.layers_removed == 5
        assert models.count_parameters(net) == 543_498
        assert net.normalized_inputs is False
    raw = models.read_state_dict(published_dir / models.PUBLISHED["KD_IG_AT"].filename)
    assert torch.equal(at.features[9].conv[0][0].weight, raw["middle_layer.conv.0.0.weight"])
    assert torch.equal(at.features[10].conv[0][0].weight, raw["end_layers.0.conv.0.0.weight"])
    # by file name and by path too
    by_name = models.load_published(models.PUBLISHED["KD"].filename, published_dir)
    by_path = models.load_published(published_dir / models.PUBLISHED["KD"].filename)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(by_name(x), plain(x)) and torch.equal(by_path(x), plain(x))


def test_damaged_published_file_is_refused(published_dir, tmp_path):
    entry = models.PUBLISHED["KD"]
    copy = tmp_path / entry.filename
    blob = bytearray((published_dir / entry.filename).read_bytes())
    blob[-100] ^= 0xFF
    copy.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256"):
        models.load_published("KD", tmp_path)


def test_download_checks_sha256_and_fails_clearly_offline(published_dir, tmp_path, monkeypatch):
    entry = models.PUBLISHED["IG"]
    seen = []

    def fake_download(url, dest, progress=False):
        seen.append(url)
        shutil.copy(published_dir / entry.filename, dest)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = models.published_path("IG", tmp_path / "dl")
    assert path.is_file() and seen == [models.PUBLISHED_URL.format(entry.filename)]

    def offline(url, dest, progress=False):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError, match="could not download"):
        models.published_path("KD", tmp_path / "dl2")
    with pytest.raises(CheckpointError, match="not found"):
        models.published_path("KD", tmp_path / "dl2", download_ok=False)
    with pytest.raises(CheckpointError, match="known: AT"):
        models.published_path("nonsense")


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"features.0.0.weight": torch.zeros(1), "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="refuses to execute"):
        models.load_student(path)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        models.load_student(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        models.load_student(text)
    teacher_file = tmp_path / "teacher.pt"
    torch.save(models.teacher().state_dict(), teacher_file)
    with pytest.raises(CheckpointError, match="keeps 19 feature modules"):
        models.load_student(teacher_file)
    wrong = models.student(4.1).state_dict()
    wrong["classifier.1.weight"] = torch.zeros(10, 95)
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="does not fit Student.*size mismatch"):
        models.load_student(tmp_path / "wrong.pt")


def test_teacher_checkpoint_in_huyvnphan_layout(tmp_path):
    net = models.teacher()
    torch.save(net.state_dict(), tmp_path / "mobilenet_v2.pt")
    # Lightning-style wrapping with a "model." prefix loads too
    wrapped = {"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}
    torch.save(wrapped, tmp_path / "lightning.ckpt")
    x = torch.rand(2, 3, 32, 32)
    net.eval()
    for f in ("mobilenet_v2.pt", "lightning.ckpt"):
        loaded = models.load_teacher(tmp_path / f)
        assert torch.equal(loaded(x), net(x))
    with pytest.raises(CheckpointError, match="SHA-256"):
        models.load_teacher(tmp_path / "mobilenet_v2.pt", sha256="0" * 64)


def test_a_model_stays_differentiable_after_predict():
    from igkd import attribution, data, train

    model = models.student(compression=1122)
    ds = data.load_synthetic("test", 4)
    train.predict(model, ds.images, normalized=False, device="cpu")
    maps = attribution.ig_maps(model, ds.images, ds.labels, n_steps=2)  # needs gradients
    assert maps.shape == (4, 32, 32)
