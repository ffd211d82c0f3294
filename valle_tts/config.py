"""The config schema of every valle_tts command (train, prepare, synthesize, evaluate)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from common.config import RunConfig, bounded
from valle_tts.codec import CodecConfig
from valle_tts.data import DataConfig
from valle_tts.models.valle import ModelConfig

PARAM_LIMIT = 500_000_000  # the course's limit on AR + NAR together


@dataclasses.dataclass
class TrainConfig:
    models: Literal["both", "ar", "nar"] = "both"  # which stage(s) this run trains
    epochs: int = bounded(20, ge=1)
    max_steps: int = bounded(0, ge=0)              # stop after this many optimizer steps (0: epochs decide)
    lr: float = bounded(5e-4, gt=0)
    warmup_steps: int = bounded(1000, ge=0)        # linear warmup, then inverse square-root decay
    weight_decay: float = bounded(0.01, ge=0)
    grad_accum: int = bounded(1, ge=1)             # batches per optimizer step
    grad_clip: float = bounded(1.0, gt=0)          # gradient norm clipping (always on)
    nar_prompt_frac: list[float] = bounded([0.25, 0.5], ge=0, le=1)  # NAR prompt: this range of the utterance
    log_every_steps: int = bounded(50, ge=1)


@dataclasses.dataclass
class SynthConfig:
    # evaluation prompts: continuation = the first prompt_s of the utterance; cross-utterance = a
    # whole other utterance of at most prompt_s (the shortest one when none is that short)
    prompt_s: float = bounded(3.0, gt=0)
    temperature: float = bounded(1.0, ge=0)            # AR sampling; 0 = greedy
    top_k: int = bounded(50, ge=0)                     # 0: off
    top_p: float = bounded(1.0, gt=0, le=1)            # 1: off
    max_frames_per_token: float = bounded(12.0, gt=0)  # AR length limit: this many frames per target text token
    # stability (valle_tts/stability.py; the expected length comes from the training data's frames
    # per text token): stop at max_length_ratio x the expected length (0: off); from the expected
    # length on, add eos_boost x (frames / expected frames - 1) to the end token's logit (0: off)
    max_length_ratio: float = bounded(0.0, ge=0)
    eos_boost: float = bounded(0.0, ge=0)
    # stability: repetition-aware sampling (VALL-E 2): if the sampled token already fills more than
    # ras_ratio of the last ras_window tokens, draw again from the full distribution (0: off)
    ras_window: int = bounded(0, ge=0)
    ras_ratio: float = bounded(0.5, ge=0, le=1)
    seed: int = 0
    batch_size: int = bounded(16, ge=1)                # utterances the AR and NAR decode together


@dataclasses.dataclass
class EvalConfig:
    modes: list[str] = dataclasses.field(default_factory=lambda: ["continuation", "cross"])
    min_duration_s: float = bounded(4.0, ge=0)  # the paper's 4-10 s test-clean subset
    max_duration_s: float = bounded(10.0, gt=0)
    max_utterances: int = bounded(0, ge=0)      # 0: all of the list
    list_seed: int = 0                          # fixes the cross-utterance prompt choice (eval_list_seed<N>.json)
    asr_model: str = "medium.en"                # openai-whisper model name
    speaker_model: str = "speechbrain/spkrec-ecapa-voxceleb"
    # random_scorers: randomly initialised whisper / ECAPA of the real classes (demo and tests only:
    # the code path runs, the numbers mean nothing)
    random_scorers: bool = False
    asr_max_tokens: int = bounded(200, ge=1)    # whisper decoding length limit per utterance
    save_wavs: int = bounded(8, ge=0)           # synthesised wavs kept per mode (eval/wavs/)
    # a loop: at least loop_min_s of codebook-1 codes that are one n-gram of at most loop_max_period_s
    # repeated back to back (the ground-truth row shows how often real speech does that)
    loop_min_s: float = bounded(1.0, gt=0)
    loop_max_period_s: float = bounded(0.25, gt=0)
    reference_rows: bool = True                 # also score the ground truth and its codec resynthesis
    # utterances of the list synthesised, scored and appended to per_utterance.csv together (up to
    # 4 rows each): bounds memory, and an interrupted evaluation redoes at most one batch
    batch_size: int = bounded(16, ge=1)


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    codec: CodecConfig = dataclasses.field(default_factory=CodecConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
