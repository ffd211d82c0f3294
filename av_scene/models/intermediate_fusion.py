"""The course baseline's intermediate fusion: per-modality mean over time and MLP, concatenated."""
from __future__ import annotations

import torch
import torch.nn as nn

from av_scene.models.blocks import EmbeddingMLP


class IntermediateFusion(nn.Module):
    """mean_t(audio) -> MLP -> (batch, embed); mean_t(video) -> MLP -> (batch, embed);
    concatenated -> Linear -> ReLU -> Linear -> {"logits": (batch, classes)}."""

    fused_loss = True

    def __init__(self, audio_dim: int, video_dim: int, num_classes: int, hidden: int = 512,
                 embed: int = 128, dropout: float = 0.2):
        super().__init__()
        self.audio = EmbeddingMLP(audio_dim, hidden, embed, dropout)
        self.video = EmbeddingMLP(video_dim, hidden, embed, dropout)
        self.classifier = nn.Sequential(nn.Linear(2 * embed, embed), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(embed, num_classes))

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> dict:
        joint = torch.cat([self.audio(audio.mean(1)), self.video(video.mean(1))], dim=-1)
        return {"logits": self.classifier(joint)}
