"""MNIST from its idx files (gzipped or not), scikit-learn's digits for the demo, pixel modes and splits.

The data is small (60k x 28 x 28), so every split lives in one tensor on the training device and a
batch is an index into it: no DataLoader workers, and the order comes from a ResumableSampler.

Pixel modes (`data.pixels`):
  intensity  grey levels in [0, 1] (the Bernoulli likelihood then acts as a cross-entropy)
  threshold  fixed binarisation, pixel = intensity > data.threshold
  dynamic    a fresh Bernoulli(intensity) draw every time a training image is used; validation and
             test images are binarised once with data.binarize_seed (the usual binarised-MNIST protocol)
"""
from __future__ import annotations

import dataclasses
import gzip
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from common.config import ConfigError, bounded, resolve_path

# MNIST's file names (the .gz suffix is optional; some mirrors write "train-images.idx3-ubyte").
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_UBYTE = 0x08


@dataclasses.dataclass
class DataConfig:
    source: Literal["mnist", "digits"] = "mnist"  # digits: scikit-learn's 1,797 8x8 digits at 28x28 (demo)
    root: str = "data/mnist"     # the idx files, directly or in torchvision's MNIST/raw sub-folder
    download: bool = False       # fetch MNIST with torchvision's downloader when the files are missing
    split: Literal["course", "holdout"] = "course"  # course: train 60k, valid = the 10k test set;
    holdout_size: int = bounded(5000, ge=1)  # holdout: the last holdout_size training images validate; test apart
    pixels: Literal["intensity", "threshold", "dynamic"] = "dynamic"
    threshold: float = bounded(0.5, ge=0, lt=1)  # pixels=threshold: intensity above this is 1
    binarize_seed: int = 0       # pixels=dynamic: the one fixed draw for validation and test


@dataclasses.dataclass
class Split:
    images: torch.Tensor  # (N, 1, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64 digit classes

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


# ---------------------------------------------------------------------------------------------
# idx files

def read_idx(path: Path) -> np.ndarray:
    """An idx file (http://yann.lecun.com/exdb/mnist/) of unsigned bytes, gzipped or not -> array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ConfigError(f"{path}: broken gzip file ({err}); delete it and download it again") from None
    if len(raw) == 0:
        raise ConfigError(f"{path}: file is empty; delete it and download it again")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ConfigError(f"{path}: not an idx file (magic number {raw[:4].hex()} should start with 0000); "
                          f"give MNIST's original idx files")
    if raw[2] != IDX_UBYTE:
        raise ConfigError(f"{path}: idx element type 0x{raw[2]:02x} is not unsigned bytes (0x08) as in MNIST")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ConfigError(f"{path}: truncated idx header; delete the file and download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ConfigError(f"{path}: shape {tuple(shape)} needs {expected:,} data bytes but the file has "
                          f"{len(raw) - header:,} (truncated or corrupt); delete it and download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_file(root: Path, stem: str) -> Path | None:
    """`stem` (e.g. train-images-idx3-ubyte) in `root` or `root/MNIST/raw`, plain before gzipped."""
    dotted = stem.replace("-idx", ".idx")
    for folder in (root, root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def download_mnist(root: Path) -> None:
    """torchvision's MNIST downloader (checks md5 sums) into root/MNIST/raw."""
    from torchvision.datasets import MNIST
    print(f"downloading MNIST into {root / 'MNIST' / 'raw'}")
    try:
        MNIST(str(root), train=True, download=True)
    except Exception as err:  # URLError, RuntimeError after every mirror failed, md5 mismatch, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"data.download=true could not fetch MNIST into {root / 'MNIST' / 'raw'} ({reason}); "
                          f"without internet, copy the four idx files (train-images-idx3-ubyte.gz, ...) "
                          f"into data.root={root}") from None


def load_mnist(root: Path, download: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images (60000, 28, 28) uint8, labels (60000,) uint8), 'test': (10k of each)}."""
    missing = [stem for pair in IDX_FILES.values() for stem in pair if find_idx_file(root, stem) is None]
    if missing and download:
        download_mnist(root)
        missing = [stem for stem in missing if find_idx_file(root, stem) is None]
    if missing:
        raise ConfigError(f"MNIST file {missing[0]}[.gz] not found in {root} or {root / 'MNIST' / 'raw'}; "
                          f"set data.root=<folder with the idx files> or data.download=true (needs internet)")
    arrays = {}
    for part, (image_stem, label_stem) in IDX_FILES.items():
        image_path, label_path = find_idx_file(root, image_stem), find_idx_file(root, label_stem)
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3:
            raise ConfigError(f"{image_path}: expected images of shape (N, rows, cols), got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ConfigError(f"{label_path}: expected {len(images):,} labels to match {image_path.name}, "
                              f"got shape {labels.shape}")
        if labels.size and labels.max() > 9:
            raise ConfigError(f"{label_path}: label {labels.max()} is not a digit 0-9")
        arrays[part] = (images, labels)
    return arrays


# ---------------------------------------------------------------------------------------------
# scikit-learn's digits (the demo: ships with a dependency, no download)

def load_digits_28(test_size: int = 297) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's 1,797 8x8 digits (grey levels 0-16) as 28x28 uint8 images laid out like MNIST:
    the digit fills a 20x20 box centred in the frame. A fixed shuffle keeps `test_size` apart."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    small = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0       # (1797, 1, 8, 8)
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    images = (F.pad(big, (4, 4, 4, 4)).clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    labels = digits.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:-test_size], order[-test_size:]
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


# ---------------------------------------------------------------------------------------------
# splits and pixel modes

def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.from_numpy(images.astype(np.float32) / 255.0)[:, None],
                 torch.from_numpy(labels.astype(np.int64)))


def load_splits(cfg: DataConfig) -> dict[str, Split]:
    """{'train', 'valid'} (course split) or {'train', 'valid', 'test'} (holdout split), pixel mode applied
    (the training split stays in grey levels under pixels=dynamic; draw_pixels binarises each batch)."""
    if cfg.source == "digits":
        arrays = load_digits_28()
    else:
        arrays = load_mnist(resolve_path(cfg.root), cfg.download)
    train, test = _to_split(*arrays["train"]), _to_split(*arrays["test"])
    if cfg.split == "course":
        splits = {"train": train, "valid": test}
    else:
        if not 0 < cfg.holdout_size < len(train):
            raise ConfigError(f"data.holdout_size={cfg.holdout_size} must be between 1 and {len(train) - 1} "
                              f"(the training set has {len(train):,} images)")
        keep = len(train) - cfg.holdout_size
        splits = {"train": Split(train.images[:keep], train.labels[:keep]),
                  "valid": Split(train.images[keep:], train.labels[keep:]), "test": test}
    if cfg.pixels == "threshold":
        for split in splits.values():
            split.images = (split.images > cfg.threshold).float()
    elif cfg.pixels == "dynamic":
        generator = torch.Generator().manual_seed(cfg.binarize_seed)
        for name, split in splits.items():
            if name != "train":
                split.images = torch.bernoulli(split.images, generator=generator)
    return splits


def draw_pixels(images: torch.Tensor, pixels: str) -> torch.Tensor:
    """A training batch as the model sees it: a fresh binarisation under pixels=dynamic (drawn from
    the global RNG, whose state the checkpoint keeps), the images unchanged otherwise."""
    return torch.bernoulli(images) if pixels == "dynamic" else images


def batches(split: Split, batch_size: int, indices=None):
    """(images, labels) batches of `split`, in the order of `indices` (e.g. a ResumableSampler) or
    sequentially. A short last batch is kept, so evaluation sees every image exactly once."""
    order = range(len(split)) if indices is None else list(indices)
    order = torch.as_tensor(order, dtype=torch.long, device=split.labels.device)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield split.images[index], split.labels[index]
