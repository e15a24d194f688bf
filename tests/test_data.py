import numpy as np
import pytest
import torch

from igkd import data
from igkd.errors import ConfigError, DataNotFoundError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path / "runs"))


@pytest.mark.parametrize("layout", ["imagefolder_cifar", "torchvision_cifar"])
def test_both_layouts_decode_exactly(layout, request):
    root, arrays = request.getfixturevalue(layout)
    for split in data.SPLITS:
        ds = data.load_cifar10(split, root, download=False)
        images, labels = arrays[split]
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(labels), 3, 32, 32)
        # PNG and pickle are lossless: exact pixels; folders are read class by class
        order = np.argsort(labels, kind="stable") if "folder" in layout else np.arange(len(labels))
        assert np.array_equal(ds.labels.numpy(), labels[order])
        assert np.array_equal(ds.images.numpy(), images[order])
        assert ds.split == split and ds.classes == data.CIFAR10_CLASSES


def test_decode_cache_is_reused_and_corruption_detected(imagefolder_cifar, monkeypatch):
    root, _ = imagefolder_cifar
    first = data.load_cifar10("test", root, download=False)

    def boom(*a):
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(data, "_decode_imagefolder", boom)
        again = data.load_cifar10("test", root, download=False)
    assert again.fingerprint == first.fingerprint
    (cache,) = list((data.paths.cache_dir() / "data").glob("cifar10-test-*.npz"))
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated by a crash or a full disk
    with pytest.warns(UserWarning, match="unreadable"):
        rebuilt = data.load_cifar10("test", root, download=False)
    assert torch.equal(rebuilt.images, first.images)


def test_changed_files_invalidate_the_cache(imagefolder_cifar):
    root, _ = imagefolder_cifar
    before = data.load_cifar10("test", root, download=False)
    victim = sorted((root / "cifar10" / "test" / "cat").iterdir())[0]
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(victim)
    after = data.load_cifar10("test", root, download=False)
    assert after.fingerprint != before.fingerprint


def test_missing_data_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError) as e:
        data.load_cifar10("train", tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "IGKD_DATA" in msg and "cifar-10-batches-py" in msg
    monkeypatch.setenv("IGKD_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError):
        data.load("cifar10", "test")
    with pytest.warns(UserWarning, match="synthetic"):
        ds = data.load("cifar10", "test", synthetic_fallback=True)
    assert ds.source == "synthetic"


def test_wrong_class_folders_are_reported(tmp_path):
    for split in data.SPLITS:
        (tmp_path / "cifar10" / split / "dogs").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="class folders"):
        data.load_cifar10("train", tmp_path, download=False)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="'valid'"):
        data.load_cifar10("valid")
    with pytest.raises(ConfigError, match="imagenet"):
        data.load("imagenet")


def test_synthetic_is_seeded_balanced_and_learnable():
    a, b = data.load_synthetic("train", 500), data.load_synthetic("train", 500)
    assert torch.equal(a.images, b.images) and a.fingerprint == b.fingerprint
    assert a.labels.bincount().tolist() == [50] * 10
    test = data.load_synthetic("test", 200)
    assert not torch.equal(test.images[:10], a.images[:10])
    # nearest class mean already separates the classes: the data is learnable
    x = a.images.float().flatten(1)
    means = torch.stack([x[a.labels == c].mean(0) for c in range(10)])
    pred = torch.cdist(test.images.float().flatten(1), means).argmin(1)
    assert (pred == test.labels).float().mean() > 0.6


def test_stratified_subsets_and_splits():
    labels = torch.arange(1000) % 10
    sub = data.stratified_subset(labels, 0.8, seed=3)
    assert len(sub) == 800 and labels[sub].bincount().tolist() == [80] * 10
    assert torch.equal(sub, data.stratified_subset(labels, 0.8, seed=3))
    assert not torch.equal(sub, data.stratified_subset(labels, 0.8, seed=4))
    assert torch.equal(data.stratified_subset(labels, 1000), torch.arange(1000))
    train, val = data.train_val_split(labels, 100, seed=0)
    assert len(val) == 100 and len(train) == 900
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert labels[val].bincount().tolist() == [10] * 10
    with pytest.raises(ConfigError, match="2000"):
        data.stratified_subset(labels, 2000)


def test_dataset_subset_and_float_conversion():
    ds = data.load_synthetic("test", 100)
    sub = ds.subset(torch.tensor([5, 1]))
    assert len(sub) == 2 and torch.equal(sub.images[0], ds.images[5])
    assert sub.fingerprint.startswith(ds.fingerprint) and sub.fingerprint != ds.fingerprint
    x = data.to_float(ds.images[:4])
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    z = data.to_float(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), normalized=True)
    assert z[0, 0, 0, 0] == pytest.approx((1 - 0.4914) / 0.2471, rel=1e-5)
