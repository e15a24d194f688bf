"""The CIFAR-aligned ImageNet subset: the synset map, both readers, the filter and the metrics."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from igkd import data, imagenet, paper
from igkd.errors import ConfigError, DataNotFoundError


@pytest.fixture(autouse=True)
def own_run_cache(tmp_path, monkeypatch):
    """Fake runs made here stay out of the session's run cache, which the notebooks nbval runs read
    (a fake student run without a method broke notebook 07 in CI)."""
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path / "runs"))


AIRPLANE, CAR, BIRD, CAT, DOG, FROG, SHIP, TRUCK = (
    "n02690373",
    "n04285008",
    "n01514668",
    "n02124075",
    "n02110185",
    "n01641577",
    "n04612504",
    "n04467665",
)
TENCH = "n01440764"  # not in the map


# --- the synset map --------------------------------------------------------------------------------


def test_synset_map_is_the_papers():
    smap = imagenet.synsets()
    assert len(smap) == 105
    assert all(imagenet.WNID.match(w) for w in smap)
    per_class = {c: sum(s.cifar_class == c for s in smap.values()) for c in data.CIFAR10_CLASSES}
    # 50 validation images per WordNet ID give the paper's counts (paper.md 7.5).
    assert {c: 50 * n for c, n in per_class.items() if n} == paper.IMAGENET_COUNTS
    assert per_class["deer"] == per_class["horse"] == 0
    assert len({s.label for s in smap.values()}) == 8
    assert all(data.CIFAR10_CLASSES[s.label] == s.cifar_class for s in smap.values())
    assert smap["n04465501"].cifar_class == "automobile"  # tractor: the paper's choice
    assert smap["n02058221"].name == "albatross"


# --- the folder reader -----------------------------------------------------------------------------


def _save(path, mode, size, colour, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format=fmt)


@pytest.fixture
def ilsvrc(tmp_path):
    """A small ILSVRC-style folder: constant-colour images of mixed sizes and modes, one corrupt
    file, one truncated file, one unmapped class and a non-class folder."""
    root = tmp_path / "val"
    _save(root / AIRPLANE / "rgb.JPEG", "RGB", (500, 375), (200, 30, 40))
    _save(root / AIRPLANE / "gray.JPEG", "L", (17, 80), 77)
    _save(root / AIRPLANE / "small.JPEG", "RGB", (1, 1), (10, 250, 10))
    _save(root / CAR / "cmyk.JPEG", "CMYK", (64, 48), (0, 255, 255, 0))  # pure red
    _save(
        root / CAR / "palette.JPEG", "P", (33, 31), 0, fmt="PNG"
    )  # a PNG named .JPEG, as in ILSVRC
    _save(root / BIRD / "rgba.JPEG", "RGBA", (40, 90), (1, 2, 3, 128), fmt="PNG")
    _save(root / BIRD / "exact.png", "RGB", (32, 32), (5, 6, 7), fmt="PNG")
    (root / BIRD / "corrupt.JPEG").write_bytes(b"not an image at all")
    good = root / BIRD / "exact.png"
    (root / DOG / "truncated.JPEG").parent.mkdir(parents=True)
    (root / DOG / "truncated.JPEG").write_bytes((root / AIRPLANE / "rgb.JPEG").read_bytes()[:200])
    _save(root / TENCH / "fish1.JPEG", "RGB", (50, 50), (0, 0, 255))
    _save(root / TENCH / "fish2.JPEG", "RGB", (50, 50), (0, 0, 255))
    (root / "README").mkdir()  # not a WordNet ID: not a class folder
    (root / BIRD / ".DS_Store").write_bytes(b"\0")
    assert good.is_file()
    return root


def test_folder_counts_ignored_and_unreadable(ilsvrc):
    with pytest.warns(UserWarning, match="2 unreadable image"):
        subset = imagenet.read_folder(ilsvrc, progress=False)
    assert len(subset) == 7
    assert subset.counts == {
        **dict.fromkeys(data.CIFAR10_CLASSES, 0),
        "airplane": 3,
        "automobile": 2,
        "bird": 2,
    }
    assert subset.ignored == {TENCH: 2} and subset.ignored_images == 2
    assert len(subset.unreadable) == 2
    assert any(u.startswith(f"{BIRD}/corrupt.JPEG") for u in subset.unreadable)
    assert any(u.startswith(f"{DOG}/truncated.JPEG") for u in subset.unreadable)
    assert subset.images.dtype == torch.uint8 and subset.images.shape == (7, 3, 32, 32)
    assert subset.data.classes == data.CIFAR10_CLASSES
    assert not subset.generated and "ImageNet-style folder" in subset.data.source


def test_folder_resize_keeps_constant_colours(ilsvrc):
    with pytest.warns(UserWarning):
        subset = imagenet.read_folder(ilsvrc, progress=False)
    colour = {name: subset.images[i].reshape(3, -1).float() for i, name in enumerate(subset.names)}
    expected = {
        f"{AIRPLANE}/rgb.JPEG": (200, 30, 40),
        f"{AIRPLANE}/gray.JPEG": (77, 77, 77),
        f"{AIRPLANE}/small.JPEG": (10, 250, 10),
        f"{CAR}/cmyk.JPEG": (255, 0, 0),
        f"{CAR}/palette.JPEG": (0, 0, 0),
        f"{BIRD}/rgba.JPEG": (1, 2, 3),
        f"{BIRD}/exact.png": (5, 6, 7),
    }
    assert set(colour) == set(expected)
    for name, rgb in expected.items():
        pixels = colour[name]
        # Every pixel equal (a box filter of a constant is that constant) and the colour right up to
        # JPEG's rounding; lossless files exactly.
        assert (pixels.max(1).values - pixels.min(1).values).max() <= 1, name
        tol = 0 if name.endswith(("png", "palette.JPEG", "rgba.JPEG")) else 3
        assert (pixels.mean(1) - torch.tensor(rgb)).abs().max() <= tol, name


def test_box_resize_averages_blocks():
    # 64x64 -> 32x32 with a box filter averages each 2x2 block (up to Pillow's fixed-point
    # rounding); a bilinear or bicubic filter would mix in the neighbouring blocks.
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = imagenet.to_32(Image.fromarray(arr))
    blocks = arr.reshape(32, 2, 32, 2, 3).astype(float).mean((1, 3)).transpose(2, 0, 1)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert np.abs(out - blocks).max() <= 1
    bilinear = np.asarray(Image.fromarray(arr).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.abs(bilinear.transpose(2, 0, 1) - blocks).max() > 10


def test_folder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="not a folder"):
        imagenet.read_folder(tmp_path / "nothing")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
    with pytest.raises(DataNotFoundError, match="no <wnid>/ class folders"):
        imagenet.read_folder(tmp_path / "flat")


def test_example_folder_round_trip(tmp_path):
    test = data.load_synthetic("test", n=200)
    root = imagenet.write_example_folder(
        tmp_path / "ex", per_wnid=2, images=test, wnids_per_class=2
    )
    with pytest.warns(UserWarning, match="1 unreadable"):
        subset = imagenet.load(root, progress=False)
    # Two WordNet IDs per class, but truck has only two and the rest at least two: 8 x 2 x 2.
    assert len(subset) == 32
    assert all(n == 4 for c, n in subset.counts.items() if c not in ("deer", "horse"))
    assert subset.ignored == {imagenet.EXAMPLE_UNMAPPED_WNID: 2}
    assert subset.generated and "NOT ImageNet" in subset.data.source


# --- the pickle reader -----------------------------------------------------------------------------


def _map_clsloc(path, order):
    path.write_text("".join(f"{w} {i} name_{i}\n" for i, w in enumerate(order, start=1)))
    return path


@pytest.fixture
def downsampled(tmp_path):
    """A val_data pickle in the downsampled-ImageNet format and its map_clsloc.txt."""
    order = [TENCH, *imagenet.synsets(), "n09999999"]  # index 1 tench, 2.. mapped, last unmapped
    _map_clsloc(tmp_path / "map_clsloc.txt", order)
    labels = [1, 2, 2, 107, 4, 1]  # 1-based: tench, airliner x2, unmapped, airship, tench
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    with open(tmp_path / "val_data", "wb") as f:
        pickle.dump({"data": pixels, "labels": labels}, f)
    return tmp_path, pixels


def test_pickle_reader(downsampled):
    folder, pixels = downsampled
    subset = imagenet.load(folder)  # auto: a folder holding val_data is the pickle
    assert len(subset) == 3
    assert subset.wnids == (AIRPLANE, AIRPLANE, "n02692877")
    assert subset.labels.tolist() == [0, 0, 0]
    assert subset.ignored == {TENCH: 2, "n09999999": 1}
    # Rows are R, G, B planes of 32x32: the tensor is the row reshaped, untouched.
    assert torch.equal(subset.images[0], torch.from_numpy(pixels[1].reshape(3, 32, 32)))
    assert torch.equal(subset.images[2][1], torch.from_numpy(pixels[4][1024:2048].reshape(32, 32)))
    assert subset.names[0] == "val_data[1]" and subset.data.source == imagenet.PICKLE_SOURCE


def test_pickle_needs_the_class_order(downsampled, tmp_path_factory, monkeypatch):
    folder, _ = downsampled
    monkeypatch.setenv("IGKD_DATA", str(tmp_path_factory.mktemp("empty")))
    (folder / "map_clsloc.txt").rename(folder / "elsewhere.txt")
    with pytest.raises(DataNotFoundError, match="map_clsloc.txt"):
        imagenet.load(folder / "val_data", "pickle")
    assert len(imagenet.load(folder / "val_data", "pickle", mapping=folder / "elsewhere.txt")) == 3
    _map_clsloc(folder / "short.txt", [TENCH, AIRPLANE])
    with pytest.raises(ConfigError, match="lacks 104 of the 105"):
        imagenet.read_pickle(folder, mapping=folder / "short.txt")


def test_pickle_written_by_python2_and_numpy1(tmp_path):
    # The published val_data predates NumPy 2: protocol 2, `numpy.core.multiarray` globals.
    _map_clsloc(tmp_path / "map_clsloc.txt", list(imagenet.synsets()))
    pixels = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    blob = pickle.dumps({b"data": pixels, b"labels": np.array([1, 105])}, protocol=2)
    (tmp_path / "val_data").write_bytes(blob.replace(b"numpy._core.", b"numpy.core."))
    subset = imagenet.read_pickle(tmp_path / "val_data")
    assert subset.labels.tolist() == [0, 9]
    assert torch.equal(subset.images.reshape(2, -1), torch.from_numpy(pixels))


def test_pickle_refuses_code(tmp_path):
    _map_clsloc(tmp_path / "map_clsloc.txt", list(imagenet.synsets()))
    (tmp_path / "val_data").write_bytes(pickle.dumps({"data": np.zeros(3), "labels": print}))
    with pytest.raises(DataNotFoundError, match="refused global builtins.print"):
        imagenet.read_pickle(tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="format='zip'"):
        imagenet.load(tmp_path, "zip")
    with pytest.raises(DataNotFoundError, match="image-net.org"):
        imagenet.find_source(tmp_path / "missing")


# --- the filter and the metrics --------------------------------------------------------------------


def test_metrics_by_hand():
    true = np.array([0, 0, 0, 2, 2, 5])
    pred = np.array([0, 0, 4, 2, 5, 5])  # one image called deer: wrong, as in the paper
    s = imagenet.scores(true, pred)
    assert s.n == 6
    assert s.accuracy == pytest.approx(100 * 4 / 6)
    assert s.per_class == pytest.approx({"airplane": 100 * 2 / 3, "bird": 50.0, "dog": 100.0})
    assert s.balanced_accuracy == pytest.approx(100 * (2 / 3 + 1 / 2 + 1) / 3)
    # kappa = (p_o - p_e) / (1 - p_e), p_o = 4/6, p_e = (3*2 + 2*1 + 0*1 + 1*2) / 36 = 10/36
    assert s.kappa == pytest.approx(14 / 26)
    assert s.absent_predictions == 1


def test_metrics_reproduce_the_papers_table():
    """Accuracy and balanced accuracy of the paper's students follow from its per-class table."""
    classes = list(paper.IMAGENET_KEPT)
    for method, per_class in paper.IMAGENET_PER_CLASS.items():
        true, pred = [], []
        for c, acc in zip(classes, per_class, strict=True):
            n, label = paper.IMAGENET_KEPT[c], data.CIFAR10_CLASSES.index(c)
            right = round(acc / 100 * n)
            true += [label] * n
            pred += [label] * right + [4] * (n - right)  # errors as deer, say
        s = imagenet.scores(np.array(true), np.array(pred))
        accuracy, balanced, _ = paper.IMAGENET_SUBSET[method]
        assert s.n == 3537
        assert s.accuracy == pytest.approx(accuracy, abs=0.006), method
        assert s.balanced_accuracy == pytest.approx(balanced, abs=0.006), method


def test_metrics_edge_cases():
    empty = imagenet.scores(np.array([], dtype=int), np.array([], dtype=int))
    assert empty.n == 0 and np.isnan(empty.accuracy)
    one = imagenet.scores(np.array([3, 3]), np.array([3, 3]))
    assert one.accuracy == 100 and one.balanced_accuracy == 100 and np.isnan(one.kappa)
    with pytest.raises(ConfigError):
        imagenet.scores(np.array([1, 2]), np.array([1]))


class _ByColour(nn.Module):
    """Predicts class int(mean red / 25.6) of what it is fed, and records the input range."""

    def __init__(self, normalized: bool) -> None:
        super().__init__()
        self.normalized_inputs = normalized
        self.seen: list[tuple[float, float]] = []

    def forward(self, x):
        self.seen.append((float(x.min()), float(x.max())))
        red = x[:, 0].mean((1, 2))
        if self.normalized_inputs:  # undo the CIFAR normalisation so both read the same colour
            red = red * data.CIFAR10_STD[0] + data.CIFAR10_MEAN[0]
        cls = (red * 255 / 25.6).long().clamp(0, 9)
        return nn.functional.one_hot(cls, 10).float()


def _colour_subset(labels, reds):
    images = torch.zeros(len(labels), 3, 32, 32, dtype=torch.uint8)
    images[:, 0] = torch.tensor(reds, dtype=torch.uint8).view(-1, 1, 1)
    lab = torch.tensor(labels)
    ds = data.Dataset(
        images, lab, data.CIFAR10_CLASSES, "test", data.fingerprint(images, lab), "val"
    )
    n = len(labels)
    return imagenet.Subset(ds, ("n0",) * n, tuple(map(str, range(n))), {}, ())


def test_filter_and_input_spaces():
    # red 13 -> class 0, 39 -> 1, 66 -> 2, 243 -> 9
    subset = _colour_subset([0, 0, 1, 2, 2, 9], [13, 39, 39, 66, 13, 243])
    teacher, student = _ByColour(normalized=True), _ByColour(normalized=False)
    result = imagenet.evaluate(teacher, {"s": student}, subset)
    assert result.predictions["teacher"].tolist() == [0, 1, 1, 2, 0, 9]
    assert imagenet.teacher_correct(result.predictions["teacher"], subset.labels).tolist() == [
        0,
        2,
        3,
        5,
    ]
    assert len(result.kept) == 4 and result.kept.labels.tolist() == [0, 1, 2, 9]
    assert result.teacher.accuracy == pytest.approx(400 / 6)
    assert result.students["s"].accuracy == 100  # the same rule on the kept images
    # The teacher saw CIFAR-normalised inputs (negative values), the student [0, 1] pixels.
    assert min(lo for lo, _ in teacher.seen) < 0
    assert all(0 <= lo and hi <= 1 for lo, hi in student.seen)
    with pytest.raises(ConfigError, match="normalized_inputs"):
        imagenet.evaluate(nn.Linear(3, 10), {}, subset)


def test_student_runs_load_in_their_input_space():
    """pipeline.load_model gives a trained student run's model the input space of its recipe."""
    from igkd import models, pipeline, runs

    torch.manual_seed(0)
    net = models.student(compression=4.1)

    def compute(run):
        run.save_torch("model.pt", net.state_dict())
        return {}

    for normalized in (False, True):
        config = {"model": "student", "layers_removed": 5, "recipe": {"normalized": normalized}}
        loaded = pipeline.load_model(runs.get_or_run("student", config, compute))
        assert isinstance(loaded, models.Student) and loaded.normalized_inputs is normalized
        assert all(
            torch.equal(a, b)
            for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True)
        )
