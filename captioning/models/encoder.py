"""CNN encoders: an image batch -> a grid of feature vectors the decoder attends over.

    features = encoder(images)   # (B, 3, H, W) normalised -> (B, grid*grid, out_dim)

torchvision backbones (ResNet-101 is the course baseline: 2048 channels pooled to 14x14; VGG-16
conv5_3 gives 512 x 14x14 at 224 px) with ImageNet weights from the torch hub cache, frozen or
partly/fully fine-tuned; and a small CNN trained from scratch (the demo).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn

from common.config import ConfigError, bounded

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16", "vgg19",
             "convnext_tiny", "efficientnet_b0")


@dataclasses.dataclass
class EncoderConfig:
    name: Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16", "vgg19",
                  "convnext_tiny", "efficientnet_b0", "small_cnn"] = "resnet101"
    pretrained: bool = True        # ImageNet weights from the torch hub cache (never downloaded here)
    finetune: Literal["none", "last", "all"] = "none"   # train no / the last stage / every layer
    grid_size: int = bounded(14, ge=1)  # feature map adaptive-pooled to grid_size x grid_size
    lr: float = bounded(1e-4, gt=0)  # learning rate of the fine-tuned encoder layers
    cache_features: bool = True    # frozen encoder: compute features once into an HDF5 file
    cache_dir: str = "runs/captioning/feature_cache"
    channels: int = bounded(64, ge=1)  # small_cnn only: width of its last layer


def weights_file(name: str) -> tuple[Path, object]:
    """Where torchvision keeps `name`'s default ImageNet weights, and the weights enum."""
    import torchvision  # heavy: only for the pretrained backbones
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name, weights


def load_backbone(name: str, pretrained: bool) -> nn.Module:
    """A torchvision model, with ImageNet weights read from the hub cache when `pretrained`."""
    import torchvision  # heavy: only for the pretrained backbones
    model = torchvision.models.get_model(name, weights=None)
    if pretrained:
        path, weights = weights_file(name)
        if not path.is_file():
            raise ConfigError(
                f"pretrained {name} weights not found at {path}; fetch them once on a machine with "
                f"internet: python -c \"import torchvision; torchvision.models.get_model('{name}', "
                f"weights='{weights}')\" (or set encoder.pretrained=false)")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def backbone_trunk(name: str, model: nn.Module) -> tuple[nn.Sequential, nn.Module, int]:
    """(convolutional trunk, its last stage, output channels) of a torchvision classifier."""
    if name.startswith("resnet"):
        trunk = nn.Sequential(*list(model.children())[:-2])   # drop avgpool and fc
        return trunk, model.layer4, model.fc.in_features
    if name.startswith("vgg"):
        layers = list(model.features.children())[:-1]          # drop the last max-pool: 14x14 at 224 px
        last_pool = max(i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d))
        trunk = nn.Sequential(*layers)
        return trunk, nn.Sequential(*layers[last_pool + 1:]), 512
    if name.startswith("convnext"):
        return model.features, model.features[-1], model.classifier[-1].in_features
    if name.startswith("efficientnet"):
        return model.features, model.features[-1], model.classifier[-1].in_features
    raise ConfigError(f"encoder.name={name} is not one of {', '.join(BACKBONES)}, small_cnn")


class SmallCNN(nn.Module):
    """Four conv blocks, for small synthetic images trained from scratch: (B,3,H,W) -> (B,C,H/8,W/8)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        widths = [3, channels // 4, channels // 2, channels, channels]
        blocks = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            if i < 3:
                blocks.append(nn.MaxPool2d(2))
        self.layers = nn.Sequential(*blocks)

    def forward(self, x):
        return self.layers(x)


class ImageEncoder(nn.Module):
    """(B, 3, H, W) normalised images -> (B, grid_size**2, out_dim) features, row-major over the grid."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.name = cfg.name
        self.grid_size = cfg.grid_size
        if cfg.name == "small_cnn":
            self.trunk = SmallCNN(cfg.channels)
            self.out_dim = cfg.channels
            self.trainable_part = self.trunk
        else:
            self.trunk, last_stage, self.out_dim = backbone_trunk(cfg.name, load_backbone(cfg.name,
                                                                                          cfg.pretrained))
            self.trainable_part = {"none": None, "last": last_stage, "all": self.trunk}[cfg.finetune]
        self.pool = nn.AdaptiveAvgPool2d(cfg.grid_size)
        for p in self.parameters():
            p.requires_grad = False
        if self.trainable_part is not None:
            for p in self.trainable_part.parameters():
                p.requires_grad = True

    @property
    def frozen(self) -> bool:
        return self.trainable_part is None

    def train(self, mode: bool = True):
        """BatchNorm layers outside the trained part keep their (ImageNet) statistics: in train mode
        they would drift with every batch although their weights are frozen."""
        super().train(mode)
        trained = set(self.trainable_part.modules()) if self.trainable_part is not None else set()
        for module in self.trunk.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module not in trained:
                module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.pool(self.trunk(images))            # (B, C, g, g)
        return grid.flatten(2).transpose(1, 2)          # (B, g*g, C)
