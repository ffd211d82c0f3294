"""One modality alone: pool the frames, then the baseline MLP and a classifier."""
from __future__ import annotations

import torch
import torch.nn as nn

from av_scene.models.blocks import EmbeddingMLP, TemporalPool


class UnimodalClassifier(nn.Module):
    """Audio-only or video-only. forward(audio, video) reads one of them, (batch, time, dim) ->
    {"logits": (batch, classes)}."""

    fused_loss = True

    def __init__(self, modality: str, in_dim: int, num_classes: int, hidden: int = 512, embed: int = 128,
                 dropout: float = 0.2, pooling: str = "mean"):
        super().__init__()
        self.modality = modality
        self.pool = TemporalPool(pooling, in_dim)
        self.embed = EmbeddingMLP(in_dim, hidden, embed, dropout)
        self.classifier = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(embed, num_classes))

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> dict:
        frames = audio if self.modality == "audio" else video
        return {"logits": self.classifier(self.embed(self.pool(frames)))}
