"""The model zoo: `build_model(cfg.model, image_shape)` -> VAE with an MLP or conv encoder/decoder."""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch.nn as nn

from common.config import ConfigError, bounded
from vae.models.conv import ConvDecoder, ConvEncoder
from vae.models.mlp import MLPDecoder, MLPEncoder
from vae.models.vae import VAE

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}


@dataclasses.dataclass
class ModelConfig:
    arch: Literal["mlp", "conv"] = "mlp"
    latent_dim: int = bounded(2, ge=1)
    activation: Literal["relu", "elu", "gelu", "silu"] = "relu"
    hidden: list[int] = bounded([512, 256], ge=1)  # mlp: encoder layer sizes
    channels: list[int] = bounded([32, 64], ge=1)  # conv: one stride-2 stage each
    convs_per_stage: int = bounded(0, ge=0)        # conv: extra 3x3 convolutions per stage
    fc_hidden: int = bounded(256, ge=1)            # conv: fully connected layer between feature map and latent


def build_model(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> VAE:
    activation = ACTIVATIONS[cfg.activation]
    if cfg.arch == "mlp":
        encoder = MLPEncoder(image_shape, cfg.hidden, cfg.latent_dim, activation)
        decoder = MLPDecoder(image_shape, cfg.hidden, cfg.latent_dim, activation)
    else:
        scale = 2 ** len(cfg.channels)
        if not cfg.channels or image_shape[1] % scale or image_shape[2] % scale:
            raise ConfigError(f"model.channels={cfg.channels}: {len(cfg.channels)} stride-2 stages need image "
                              f"sides divisible by {scale}, got {image_shape[1]}x{image_shape[2]} "
                              f"(MNIST's 28x28 allows 1 or 2 stages)")
        args = (image_shape, cfg.channels, cfg.convs_per_stage, cfg.fc_hidden, cfg.latent_dim, activation)
        encoder, decoder = ConvEncoder(*args), ConvDecoder(*args)
    return VAE(encoder, decoder, cfg.latent_dim)
