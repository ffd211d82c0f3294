"""Early (feature) fusion: audio and video frames concatenated before the temporal model."""
from __future__ import annotations

import torch
import torch.nn as nn

from av_scene.models.blocks import EmbeddingMLP, FrameEncoder, TemporalPool


class EarlyFusion(nn.Module):
    """(batch, time, Da) + (batch, time, Dv) -> per-frame (batch, time, Da + Dv) -> frame encoder ->
    pooling over time -> MLP -> {"logits": (batch, classes)}. Both inputs have the same frame count."""

    fused_loss = True

    def __init__(self, audio_dim: int, video_dim: int, num_classes: int, hidden: int = 512,
                 embed: int = 128, dropout: float = 0.2, pooling: str = "mean"):
        super().__init__()
        self.frames = FrameEncoder(audio_dim + video_dim, hidden, dropout)
        self.pool = TemporalPool(pooling, hidden)
        self.embed = EmbeddingMLP(hidden, hidden, embed, dropout)
        self.classifier = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(embed, num_classes))

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> dict:
        frames = self.frames(torch.cat([audio, video], dim=-1))
        return {"logits": self.classifier(self.embed(self.pool(frames)))}
