"""The config schema of captioning/ (train.py and evaluate.py read the same file)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from captioning.data import DataConfig
from captioning.decoding import DecodeConfig
from captioning.models.captioner import DecoderConfig
from captioning.models.encoder import EncoderConfig
from captioning.scheduled_sampling import ScheduledSamplingConfig
from common.config import RunConfig, bounded


@dataclasses.dataclass
class TrainConfig:
    epochs: int = bounded(20, ge=1)
    batch_size: int = bounded(32, ge=1)
    lr: float = bounded(4e-4, gt=0)                # decoder learning rate (Adam); the encoder's is encoder.lr
    grad_clip: float = bounded(5.0, ge=0)          # gradient norm clip (0: off)
    alpha_c: float = bounded(1.0, ge=0)            # weight of the doubly stochastic attention regularisation
    lr_decay_every_epochs: int = bounded(0, ge=0)  # multiply both learning rates by lr_decay every N epochs (0: never)
    lr_decay: float = bounded(0.8, gt=0, le=1)
    log_every_steps: int = bounded(50, ge=1)
    valid_images: int = bounded(0, ge=0)           # dev images greedy-decoded every epoch for BLEU-4/CIDEr (0: all)
    select_metric: Literal["cider", "bleu4"] = "cider"  # picks best.pt
    # cross_entropy: teacher forcing (and scheduled sampling). scst: self-critical sequence training
    # (captioning/scst.py), CIDEr-D as the reward, starting from the cross-entropy model in init_from
    method: Literal["cross_entropy", "scst"] = "cross_entropy"
    init_from: str = ""                            # scst: a cross-entropy run folder (its best.pt) or checkpoint file
    scst_samples: int = bounded(5, ge=1)           # captions sampled per image (mean baseline: at least 2)
    scst_baseline: Literal["greedy", "mean"] = "greedy"  # greedy caption's reward, or the other samples' mean
    scst_max_len: int = bounded(20, ge=1)          # tokens per sampled caption at most (including <end>)


@dataclasses.dataclass
class EvaluateConfig:
    splits: list[str] = dataclasses.field(default_factory=lambda: ["dev", "test"])
    examples: int = bounded(5, ge=0)           # best and worst examples saved (and printed) per metric
    attention_figures: int = bounded(4, ge=0)  # test images drawn with their attention maps
    meteor: bool = True
    spice: bool = True                         # tried; reported unavailable (with the fix) when it cannot run
    human_ceiling: bool = True                 # score the human captions leave-one-out on test


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)
    sampling: ScheduledSamplingConfig = dataclasses.field(default_factory=ScheduledSamplingConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
