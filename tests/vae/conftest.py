"""Shared fixtures of the vae/ tests: tiny generated MNIST idx files and a one-thread torch."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """An idx file of unsigned bytes (MNIST's format), gzipped when `gz`."""
    data = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` 28x28 images: a bright bar whose position encodes the label, on a dark background."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = (rng.random((count, 28, 28)) * 40).astype(np.uint8)
    for image, label in zip(images, labels):
        image[4:24, 2 + 2 * label:5 + 2 * label] = 230
    return images, labels


@pytest.fixture
def idx_tools():
    """(write_idx, fake_digits) for tests that build their own files (conftest is not importable
    under --import-mode=importlib)."""
    return write_idx, fake_digits


@pytest.fixture
def mnist_folder(tmp_path):
    """make(folder_name, n_train, n_test, gz, raw_layout) -> the folder to give as data.root."""
    def make(name="mnist", n_train=96, n_test=32, gz=True, raw_layout=False) -> Path:
        root = tmp_path / name
        folder = root / "MNIST" / "raw" if raw_layout else root
        suffix = ".gz" if gz else ""
        for prefix, count, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
            images, labels = fake_digits(count, seed)
            write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
            write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        return root
    return make

