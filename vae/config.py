"""The config schema of vae/ (every YAML key and command-line override is checked against it)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from common.config import RunConfig, bounded
from vae.data import DataConfig
from vae.models import ModelConfig


@dataclasses.dataclass
class TrainConfig:
    epochs: int = bounded(30, ge=1)
    batch_size: int = bounded(128, ge=1)                  # global batch (split over ranks under DDP)
    lr: float = bounded(1e-3, gt=0)                       # AdamW
    weight_decay: float = bounded(0.0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"  # cosine: decay to 0 over all epochs
    grad_clip: float = bounded(0.0, ge=0)                 # max gradient norm (0: off)
    beta: float = bounded(1.0, ge=0)                      # weight of the KL term (beta-VAE when != 1)
    kl_warmup_steps: int = bounded(0, ge=0)               # KL weight grows linearly from 0 to beta over these steps
    free_bits: float = bounded(0.0, ge=0)                 # KL floor per latent dimension in nats (0: off)
    select_by: Literal["bce", "neg_elbo"] = "bce"         # best.pt: lowest validation BCE (the course's target)
    log_every_steps: int = bounded(50, ge=1)
    figures_every_epochs: int = bounded(1, ge=0)  # latent traversal, reconstructions, samples to tensorboard (0: never)


@dataclasses.dataclass
class EvalConfig:
    batch_size: int = bounded(1000, ge=1)
    iw_samples: int = bounded(100, ge=0)      # k of the importance-weighted NLL (evaluate.py; 0: skip)
    iw_images: int = bounded(0, ge=0)         # estimate the NLL on the first N images only (0: all)
    seed: int = 1234                          # the z samples of evaluation (fixed: epochs compare like for like)
    traversal_steps: int = bounded(21, ge=1)  # z values per axis in [-z_max, z_max] of the latent figures
    z_max: float = bounded(5.0, gt=0)


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
