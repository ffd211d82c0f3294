"""Convolutional encoder and decoder: stride-2 convolutions halve the image per stage
(28 -> 14 -> 7 with two stages), optional 3x3 convolutions add depth at each resolution, and a
fully connected layer sits between the feature map and the latent code. The decoder mirrors it
with transposed convolutions."""
from __future__ import annotations

import torch
import torch.nn as nn


class ConvEncoder(nn.Module):
    """(batch, 1, H, W) -> (batch, 2 * latent_dim). H and W must be divisible by 2 ** len(channels)."""

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], convs_per_stage: int,
                 fc_hidden: int, latent_dim: int, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        in_channels, height, width = image_shape
        layers = []
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1), activation()]
            for _ in range(convs_per_stage):
                layers += [nn.Conv2d(out_channels, out_channels, 3, padding=1), activation()]
            in_channels, height, width = out_channels, height // 2, width // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(nn.Linear(in_channels * height * width, fc_hidden), activation(),
                                  nn.Linear(fc_hidden, 2 * latent_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class ConvDecoder(nn.Module):
    """(batch, latent_dim) -> pixel logits (batch, 1, H, W)."""

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], convs_per_stage: int,
                 fc_hidden: int, latent_dim: int, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        out_channels, height, width = image_shape
        scale = 2 ** len(channels)
        self.map_shape = (channels[-1], height // scale, width // scale)
        self.head = nn.Sequential(nn.Linear(latent_dim, fc_hidden), activation(),
                                  nn.Linear(fc_hidden, channels[-1] * (height // scale) * (width // scale)),
                                  activation())
        layers = []
        targets = [*reversed(channels[:-1]), out_channels]  # channel count after each upsampling
        for stage_in, stage_out in zip(reversed(channels), targets):
            for _ in range(convs_per_stage):
                layers += [nn.Conv2d(stage_in, stage_in, 3, padding=1), activation()]
            layers += [nn.ConvTranspose2d(stage_in, stage_out, 4, stride=2, padding=1), activation()]
        self.upsample = nn.Sequential(*layers[:-1])  # the last layer outputs logits: no activation

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.head(z).view(-1, *self.map_shape))
