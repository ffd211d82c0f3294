"""The config schema of vae/ (every YAML key and command-line override is checked against it)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from common.config import RunConfig
from vae.data import DataConfig
from vae.models import ModelConfig


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128         # global batch (split over ranks under DDP)
    lr: float = 1e-3              # AdamW
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"  # cosine: decay to 0 over all epochs
    grad_clip: float = 0.0        # max gradient norm (0: off)
    beta: float = 1.0             # weight of the KL term (beta-VAE when != 1)
    kl_warmup_steps: int = 0      # KL weight grows linearly from 0 to beta over these steps
    free_bits: float = 0.0        # KL floor per latent dimension in nats (0: off)
    select_by: Literal["bce", "neg_elbo"] = "bce"  # best.pt: lowest validation BCE (the course's target)
    log_every_steps: int = 50
    figures_every_epochs: int = 1  # latent traversal, reconstructions, prior samples to tensorboard (0: never)


@dataclasses.dataclass
class EvalConfig:
    batch_size: int = 1000
    iw_samples: int = 100         # k of the importance-weighted NLL (evaluate.py; 0: skip)
    iw_images: int = 0            # estimate the NLL on the first N images only (0: all)
    seed: int = 1234              # the z samples of evaluation (fixed: epochs compare like for like)
    traversal_steps: int = 21     # z values per axis in [-z_max, z_max] of the latent figures
    z_max: float = 5.0


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


def check_config(cfg: Config) -> None:
    """Value checks the types cannot express; one ConfigError line each."""
    from common.config import ConfigError
    positive = {"train.epochs": cfg.train.epochs, "train.batch_size": cfg.train.batch_size,
                "train.log_every_steps": cfg.train.log_every_steps, "eval.batch_size": cfg.eval.batch_size,
                "eval.traversal_steps": cfg.eval.traversal_steps}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}={value} must be at least 1")
    non_negative = {"train.lr": cfg.train.lr, "train.kl_warmup_steps": cfg.train.kl_warmup_steps,
                    "train.free_bits": cfg.train.free_bits, "train.grad_clip": cfg.train.grad_clip,
                    "train.beta": cfg.train.beta, "train.figures_every_epochs": cfg.train.figures_every_epochs,
                    "eval.iw_samples": cfg.eval.iw_samples, "eval.iw_images": cfg.eval.iw_images}
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key}={value} must not be negative")
    if not 0.0 <= cfg.data.threshold < 1.0:
        raise ConfigError(f"data.threshold={cfg.data.threshold} must be in [0, 1)")
