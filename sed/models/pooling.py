"""Clip probability from frame probabilities: the pooling that lets a model trained on clip labels
learn frame-level detections (Wang et al., "A comparison of five multiple instance learning pooling
functions for sound event detection with weak labeling", ICASSP 2019)."""
from __future__ import annotations

import torch
import torch.nn as nn


class ClipPooling(nn.Module):
    """(batch, time, classes) frame probabilities -> (batch, classes) clip probabilities.

    linear_softmax: sum(p^2) / sum(p) (frames weighted by their own probability);
    attention: frames weighted by a softmax over time of learned per-class scores of the hidden states;
    max: the loudest frame; mean: every frame equally.
    """

    def __init__(self, kind: str, hidden_dim: int, n_classes: int):
        super().__init__()
        if kind not in ("linear_softmax", "attention", "max", "mean"):
            raise ValueError(f"unknown pooling {kind!r}")
        self.kind = kind
        self.attention = nn.Linear(hidden_dim, n_classes) if kind == "attention" else None

    def forward(self, frame_probs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """frame_probs (batch, time, classes); hidden (batch, time, hidden_dim) at the same rate."""
        if self.kind == "linear_softmax":
            return (frame_probs ** 2).sum(1) / frame_probs.sum(1).clamp_min(1e-7)
        if self.kind == "attention":
            weights = torch.softmax(self.attention(hidden), dim=1)
            return (weights * frame_probs).sum(1)
        if self.kind == "max":
            return frame_probs.amax(1)
        return frame_probs.mean(1)
