"""vae/data.py: the idx reader (plain, gzipped, torchvision layout), splits, pixel modes, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.config import ConfigError
from vae.data import DataConfig, batches, draw_pixels, load_digits_28, load_splits, read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz, idx_tools):
    write_idx, fake_digits = idx_tools
    images, labels = fake_digits(5, seed=3)
    assert np.array_equal(read_idx(write_idx(tmp_path / "images", images, gz)), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "labels", labels, gz)), labels)


@pytest.mark.parametrize("gz,raw_layout", [(True, False), (False, True)])
def test_course_and_holdout_splits(mnist_folder, gz, raw_layout, idx_tools):
    _, fake_digits = idx_tools
    root = mnist_folder(gz=gz, raw_layout=raw_layout)
    course = load_splits(DataConfig(root=str(root), pixels="intensity"))
    assert {name: len(s) for name, s in course.items()} == {"train": 96, "valid": 32}
    assert course["train"].images.shape == (96, 1, 28, 28)
    expected, labels = fake_digits(96, seed=0)
    assert torch.allclose(course["train"].images[:, 0], torch.from_numpy(expected / 255.0).float())
    assert torch.equal(course["train"].labels, torch.from_numpy(labels.astype(np.int64)))
    holdout = load_splits(DataConfig(root=str(root), split="holdout", holdout_size=16, pixels="intensity"))
    assert {name: len(s) for name, s in holdout.items()} == {"train": 80, "valid": 16, "test": 32}
    assert torch.equal(holdout["valid"].images, course["train"].images[80:])
    assert torch.equal(holdout["test"].images, course["valid"].images)


def test_pixel_modes(mnist_folder):
    root = str(mnist_folder())
    grey = load_splits(DataConfig(root=root, pixels="intensity"))
    fixed = load_splits(DataConfig(root=root, pixels="threshold", threshold=0.5))
    assert torch.equal(fixed["train"].images, (grey["train"].images > 0.5).float())
    dynamic = load_splits(DataConfig(root=root, pixels="dynamic", binarize_seed=7))
    again = load_splits(DataConfig(root=root, pixels="dynamic", binarize_seed=7))
    other = load_splits(DataConfig(root=root, pixels="dynamic", binarize_seed=8))
    # training images stay grey (binarised per batch); evaluation images are one fixed binary draw
    assert torch.equal(dynamic["train"].images, grey["train"].images)
    assert set(dynamic["valid"].images.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(dynamic["valid"].images, again["valid"].images)
    assert not torch.equal(dynamic["valid"].images, other["valid"].images)
    torch.manual_seed(0)
    first = draw_pixels(grey["train"].images, "dynamic")
    torch.manual_seed(0)
    assert torch.equal(first, draw_pixels(grey["train"].images, "dynamic"))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    # a pixel of intensity p is 1 with probability p
    assert abs(first.mean().item() - grey["train"].images.mean().item()) < 0.01
    assert draw_pixels(grey["train"].images, "intensity") is grey["train"].images


def test_batches_cover_every_image_once(mnist_folder):
    split = load_splits(DataConfig(root=str(mnist_folder()), pixels="intensity"))["valid"]
    seen = torch.cat([labels for _, labels in batches(split, 10)])
    assert torch.equal(seen, split.labels)
    order = [5, 3, 1]
    images, _ = next(batches(split, 10, order))
    assert torch.equal(images, split.images[order])


def test_digits_demo_source():
    parts = load_digits_28()
    train_images, train_labels = parts["train"]
    assert train_images.shape == (1500, 28, 28) and parts["test"][0].shape == (297, 28, 28)
    assert train_images.dtype == np.uint8 and set(np.unique(train_labels)) == set(range(10))
    assert train_images[:, :4].max() == 0 and train_images[:, :, -4:].max() == 0  # MNIST-like margin
    assert train_images.max() > 200


def test_missing_files_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte\[\.gz\] not found .*data.download=true"):
        load_splits(DataConfig(root=str(tmp_path)))


def test_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://...")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(ConfigError, match=r"could not fetch MNIST into .*MNIST/raw \(Error downloading"):
        load_splits(DataConfig(root=str(tmp_path), download=True))


def test_download_uses_torchvision_layout(tmp_path, monkeypatch, mnist_folder):
    import torchvision.datasets
    prepared = mnist_folder("prepared", gz=True, raw_layout=True)
    calls = []

    def fake_download(root, train, download):  # what torchvision leaves behind: root/MNIST/raw/*.gz
        calls.append((root, download))
        (tmp_path / "target" / "MNIST").mkdir(parents=True)
        (prepared / "MNIST" / "raw").rename(tmp_path / "target" / "MNIST" / "raw")
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_download)
    splits = load_splits(DataConfig(root=str(tmp_path / "target"), download=True))
    assert calls == [(str(tmp_path / "target"), True)] and len(splits["train"]) == 96


@pytest.mark.parametrize("damage,message", [
    (lambda raw: raw[:-10], r"needs 75,264 data bytes but the file has 75,254"),
    (lambda raw: b"\x12\x34" + raw[2:], r"not an idx file"),
    (lambda raw: raw[:2] + b"\x0d" + raw[3:], r"element type 0x0d is not unsigned bytes"),
    (lambda raw: b"", r"file is empty"),
])
def test_malformed_idx_file_gives_one_clear_error(mnist_folder, damage, message):
    root = mnist_folder(gz=False)
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ConfigError, match=message) as info:
        load_splits(DataConfig(root=str(root)))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_broken_gzip_and_mismatched_labels(mnist_folder, idx_tools):
    write_idx, _ = idx_tools
    root = mnist_folder(gz=True)
    images = root / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100])
    with pytest.raises(ConfigError, match="broken gzip file"):
        load_splits(DataConfig(root=str(root)))
    root = mnist_folder("other", gz=True)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(31, np.uint8), gz=True)
    with pytest.raises(ConfigError, match="expected 32 labels"):
        load_splits(DataConfig(root=str(root)))


def test_holdout_larger_than_training_set(mnist_folder):
    with pytest.raises(ConfigError, match="data.holdout_size=5000 must be between 1 and 95"):
        load_splits(DataConfig(root=str(mnist_folder()), split="holdout"))


def test_real_mnist(shared_data):
    root = shared_data / "mnist"
    splits = load_splits(DataConfig(root=str(root), pixels="threshold"))
    assert (len(splits["train"]), len(splits["valid"])) == (60000, 10000)
    assert splits["train"].images.shape[1:] == (1, 28, 28)
    assert torch.bincount(splits["valid"].labels).tolist()[:2] == [980, 1135]
