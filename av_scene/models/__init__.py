"""Audio-visual scene classifiers. Every model maps audio (batch, time, Da) and video
(batch, time, Dv) to a dict with "logits" (batch, classes), and, where the model has them, the
unimodal "audio_logits"/"video_logits" that the modality-conflict analysis reads."""
from __future__ import annotations

import dataclasses

import torch.nn as nn

from av_scene.models.early_fusion import EarlyFusion
from av_scene.models.gated_fusion import GatedAttentionFusion
from av_scene.models.intermediate_fusion import IntermediateFusion
from av_scene.models.late_fusion import LATE_RULES, LateFusion
from av_scene.models.unimodal import UnimodalClassifier
from common.config import ConfigError, bounded

MODEL_NAMES = ("audio", "video", "early", "intermediate", "late", "gated")
MODEL_LABELS = {"audio": "audio-only MLP", "video": "video-only MLP", "early": "early fusion",
                "intermediate": "intermediate fusion (course baseline)", "late": "late fusion",
                "gated": "attention pooling + gated fusion"}


@dataclasses.dataclass
class ModelConfig:
    name: str = "intermediate"  # audio | video | early | intermediate (course baseline) | late | gated
    hidden: int = bounded(512, ge=1)  # first MLP layer (gated: the frame encoding size)
    embed: int = bounded(128, ge=1)  # per-modality embedding of the baseline MLP
    dropout: float = bounded(0.2, ge=0, lt=1)
    pooling: str = "mean"       # mean | attention, over time (audio, video, early, late)
    late_rule: str = "average"  # late fusion's headline rule: average | weighted | stacking
    aux_weight: float = bounded(0.3, ge=0)  # gated: weight of the unimodal auxiliary losses


def build_model(cfg: ModelConfig, num_classes: int, audio_dim: int, video_dim: int) -> nn.Module:
    if cfg.pooling not in ("mean", "attention"):
        raise ConfigError(f"model.pooling must be mean or attention, got {cfg.pooling!r}")
    if cfg.late_rule not in LATE_RULES:
        raise ConfigError(f"model.late_rule must be one of {', '.join(LATE_RULES)}, got {cfg.late_rule!r}")
    shared = {"num_classes": num_classes, "hidden": cfg.hidden, "dropout": cfg.dropout}
    if cfg.name in ("audio", "video"):
        return UnimodalClassifier(cfg.name, audio_dim if cfg.name == "audio" else video_dim,
                                  embed=cfg.embed, pooling=cfg.pooling, **shared)
    if cfg.name == "early":
        return EarlyFusion(audio_dim, video_dim, embed=cfg.embed, pooling=cfg.pooling, **shared)
    if cfg.name == "intermediate":
        return IntermediateFusion(audio_dim, video_dim, embed=cfg.embed, **shared)
    if cfg.name == "late":
        return LateFusion(audio_dim, video_dim, embed=cfg.embed, pooling=cfg.pooling, **shared)
    if cfg.name == "gated":
        return GatedAttentionFusion(audio_dim, video_dim, **shared)
    raise ConfigError(f"model.name must be one of {', '.join(MODEL_NAMES)}, got {cfg.name!r}")
