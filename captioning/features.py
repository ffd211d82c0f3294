"""Frozen-encoder features cached once to HDF5: with a frozen ResNet-101 the CNN is most of the
compute, and it gives the same output every epoch, so it runs once over every image.

File: <cache_dir>/<encoder>-<pretrained|random>-<image_size>px-<grid>x<grid>.h5 with
    names     (N,) image file names
    features  (N, grid*grid, channels) float16
Written to a temporary name and renamed when complete, so an interrupted run never leaves a
half-written cache that a later run would trust.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from captioning.data import ImageSource, normalize_images
from captioning.models.encoder import ImageEncoder
from common.config import resolve_path
from common.log import progress


def cache_path(cache_dir: str, encoder_name: str, pretrained: bool, image_size: int, grid: int) -> Path:
    weights = "imagenet" if pretrained else "random"
    return resolve_path(cache_dir) / f"{encoder_name}-{weights}-{image_size}px-{grid}x{grid}.h5"


@torch.no_grad()
def cache_features(encoder: ImageEncoder, names: list[str], images_dir: Path, image_size: int, path: Path,
                   device: torch.device, batch_size: int = 64) -> Path:
    """Encode every image of `names` (deduplicated) into `path`; reuse it when it holds them all."""
    names = sorted(set(names))
    if path.is_file():
        with h5py.File(path, "r") as h5:
            if set(names) <= set(h5["names"].asstr()[:]):
                return path
    print(f"caching {encoder.name} features of {len(names)} images to {path} (once)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    source = ImageSource(names, images_dir, image_size)
    loader = torch.utils.data.DataLoader(range(len(names)), batch_size=batch_size,
                                         collate_fn=lambda idx: torch.stack([source[i] for i in idx]))
    encoder = encoder.to(device).eval()
    dim, positions = encoder.out_dim, encoder.grid_size ** 2
    with h5py.File(tmp, "w") as h5:
        h5.create_dataset("names", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        out = h5.create_dataset("features", (len(names), positions, dim), dtype="float16",
                                chunks=(1, positions, dim))
        row = 0
        for images in progress(loader, desc="features"):
            features = encoder(normalize_images(images.to(device)))
            out[row:row + len(features)] = features.cpu().numpy().astype(np.float16)
            row += len(features)
    os.replace(tmp, path)
    return path


def image_sources(cfg, corpus, encoder: ImageEncoder, device: torch.device) -> tuple[dict, bool]:
    """{split: ImageSource} and whether they yield cached features (a frozen encoder with
    encoder.cache_features) rather than images."""
    use_cache = encoder.frozen and cfg.encoder.cache_features
    path = None
    if use_cache:
        path = cache_path(cfg.encoder.cache_dir, cfg.encoder.name, cfg.encoder.pretrained,
                          cfg.data.image_size, cfg.encoder.grid_size)
        all_names = [n for names in corpus.splits.values() for n in names]
        cache_features(encoder, all_names, corpus.images_dir, cfg.data.image_size, path, device)
    sources = {split: ImageSource(names, corpus.images_dir, cfg.data.image_size,
                                  preload=cfg.data.preload_images, features_path=path)
               for split, names in corpus.splits.items()}
    return sources, use_cache
