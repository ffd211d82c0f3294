"""The stronger model: attention pooling over time per modality, a learned gate that decides per
clip and per feature how much to trust audio vs video, and auxiliary unimodal heads."""
from __future__ import annotations

import torch
import torch.nn as nn

from av_scene.models.blocks import AttentionPool, FrameEncoder


class GatedAttentionFusion(nn.Module):
    """audio (batch, time, Da), video (batch, time, Dv) ->
        h_a, h_v = attention-pooled frame encodings (batch, hidden)
        gate = sigmoid(W [h_a; h_v])            (batch, hidden), 1 = trust audio
        fused = gate * h_a + (1 - gate) * h_v   -> {"logits"}
    plus "audio_logits"/"video_logits" from heads on h_a/h_v (trained with the auxiliary loss, they
    give the modality-conflict analysis its unimodal predictions) and "gate" (batch,) its mean."""

    fused_loss = True

    def __init__(self, audio_dim: int, video_dim: int, num_classes: int, hidden: int = 256,
                 dropout: float = 0.2):
        super().__init__()
        self.audio_frames = FrameEncoder(audio_dim, hidden, dropout)
        self.video_frames = FrameEncoder(video_dim, hidden, dropout)
        self.audio_pool = AttentionPool(hidden)
        self.video_pool = AttentionPool(hidden)
        self.gate = nn.Linear(2 * hidden, hidden)
        self.classifier = nn.Sequential(nn.LayerNorm(hidden), nn.Dropout(dropout), nn.Linear(hidden, hidden),
                                        nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        self.audio_head = nn.Linear(hidden, num_classes)
        self.video_head = nn.Linear(hidden, num_classes)

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> dict:
        h_audio, _ = self.audio_pool(self.audio_frames(audio))
        h_video, _ = self.video_pool(self.video_frames(video))
        gate = torch.sigmoid(self.gate(torch.cat([h_audio, h_video], dim=-1)))
        fused = gate * h_audio + (1 - gate) * h_video
        return {"logits": self.classifier(fused), "audio_logits": self.audio_head(h_audio),
                "video_logits": self.video_head(h_video), "gate": gate.mean(-1)}
