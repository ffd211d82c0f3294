"""Pieces the fusion models share: the course baseline's per-modality MLP and temporal pooling."""
from __future__ import annotations

import torch
import torch.nn as nn


class EmbeddingMLP(nn.Module):
    """The course baseline's branch: Linear -> BatchNorm -> ReLU -> Dropout -> Linear.
    (batch, in_dim) -> (batch, out_dim)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AttentionPool(nn.Module):
    """Softmax attention over time: (batch, time, dim) -> (batch, dim), weights (batch, time).
    Frames that carry the scene (a tram bell, a platform sign) can outweigh the rest."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.score(frames).squeeze(-1), dim=1)
        return torch.einsum("bt,btd->bd", weights, frames), weights


class TemporalPool(nn.Module):
    """`mean` (the baseline) or `attention` pooling; (batch, time, dim) -> (batch, dim)."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.attention = AttentionPool(dim) if kind == "attention" else None

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.attention is None:
            return frames.mean(dim=1)
        return self.attention(frames)[0]


class FrameEncoder(nn.Module):
    """Per-frame projection before pooling: (batch, time, in_dim) -> (batch, time, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(),
                                 nn.Dropout(dropout))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)
