"""Fully connected encoder and decoder (Kingma & Welling 2014 used one hidden layer of 500)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def _stack(sizes: list[int], activation: type[nn.Module]) -> list[nn.Module]:
    layers = []
    for size_in, size_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(size_in, size_out), activation()]
    return layers


class MLPEncoder(nn.Module):
    """(batch, 1, H, W) -> (batch, 2 * latent_dim): mu and log-variance side by side."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: list[int], latent_dim: int,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        sizes = [math.prod(image_shape), *hidden]
        self.net = nn.Sequential(nn.Flatten(), *_stack(sizes, activation), nn.Linear(sizes[-1], 2 * latent_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class MLPDecoder(nn.Module):
    """(batch, latent_dim) -> pixel logits (batch, 1, H, W); hidden sizes mirror the encoder's."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: list[int], latent_dim: int,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        sizes = [latent_dim, *reversed(hidden)]
        self.net = nn.Sequential(*_stack(sizes, activation), nn.Linear(sizes[-1], math.prod(image_shape)),
                                 nn.Unflatten(1, image_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
