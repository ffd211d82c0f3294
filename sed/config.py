"""The config schema shared by prepare.py, train.py and evaluate.py (one YAML file drives all three)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from common.config import RunConfig

# DCASE2018 Task 4 classes, in the order of the model's outputs.
CLASSES = ["Alarm_bell_ringing", "Blender", "Cat", "Dishes", "Dog", "Electric_shaver_toothbrush",
           "Frying", "Running_water", "Speech", "Vacuum_cleaner"]


@dataclasses.dataclass
class SynthConfig:
    """The generated DCASE-layout set (sed/synth.py) used by the demo and the tests."""
    enabled: bool = False         # generate it into data.root when missing
    train_clips: int = 300        # weakly labelled
    test_clips: int = 60          # strongly labelled, for the post-processing sweep
    eval_clips: int = 100         # strongly labelled, for the final numbers
    sample_rate: int = 16000
    seed: int = 1234


@dataclasses.dataclass
class DataConfig:
    root: str = "data/dcase2018_task4"   # DCASE2018 Task 4 folder (audio/, metadata/)
    weak_csv: str = "metadata/train/weak.csv"       # filename<TAB>label,label
    weak_audio: str = "audio/train/weak"
    test_csv: str = "metadata/test/test.csv"        # strong labels; picks post-processing ("" = none)
    test_audio: str = "audio/test"
    eval_csv: str = "metadata/eval/eval.csv"        # strong labels; the reported numbers
    eval_audio: str = "audio/eval"
    features_dir: str = ""        # HDF5 features; "" = <root>/features/<settings>
    workers: int = 4              # feature-extraction processes
    valid_fraction: float = 0.1   # weak clips held out (multi-label stratified) for early stopping
    split_seed: int = 0
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)


@dataclasses.dataclass
class FeatureConfig:
    """Log-mel settings (the course's: 44.1 kHz, n_fft 2048, 40 ms window, 20 ms hop, 64 bands)."""
    sample_rate: int = 44100      # audio at another rate is resampled
    n_fft: int = 2048
    win_ms: float = 40.0
    hop_ms: float = 20.0
    n_mels: int = 64
    fmin_hz: float = 0.0
    fmax_hz: float = 0.0          # 0 = sample_rate / 2
    clip_s: float = 10.0          # clips are padded / cut to this length


@dataclasses.dataclass
class ModelConfig:
    name: Literal["crnn", "cdur"] = "crnn"
    conv_channels: list[int] = dataclasses.field(default_factory=lambda: [64, 64, 64])
    freq_pool: list[int] = dataclasses.field(default_factory=lambda: [4, 4, 4])
    time_pool: list[int] = dataclasses.field(default_factory=lambda: [1, 1, 1])
    rnn_hidden: int = 64          # per direction
    rnn_layers: int = 2
    dropout: float = 0.2
    pooling: Literal["linear_softmax", "attention", "max", "mean"] = "linear_softmax"


@dataclasses.dataclass
class AugmentConfig:
    spec_augment: bool = False
    time_masks: int = 2
    time_mask_frames: int = 40    # widest mask
    freq_masks: int = 2
    freq_mask_bands: int = 8
    mixup: bool = False
    mixup_alpha: float = 0.2
    time_shift: bool = False
    time_shift_frames: int = 100  # roll by up to +-this many frames
    noise: bool = False
    noise_std: float = 0.1        # on normalised features


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    grad_clip: float = 5.0        # 0 = off
    plateau_patience: int = 3     # epochs without a better valid mAP before the lr is cut
    plateau_factor: float = 0.5
    early_stop_patience: int = 10  # epochs without a better valid mAP before training stops
    log_every_steps: int = 20


@dataclasses.dataclass
class PostprocessConfig:
    """Frame probabilities -> events. The sweep on the strong test split replaces threshold and
    median_s per class; the remaining settings apply as given."""
    threshold: float = 0.5
    low_threshold_ratio: float = 0.5   # hysteresis: an event extends while prob > ratio * threshold
    median_s: float = 0.5
    min_event_s: float = 0.1
    min_gap_s: float = 0.1            # gaps shorter than this are filled
    gate_by_clip: bool = True         # keep events only for classes tagged in the clip
    tag_threshold: float = 0.5
    sweep: bool = True
    sweep_thresholds: list[float] = dataclasses.field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    sweep_median_s: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.1, 0.3, 0.5, 1.0])
    timeline_clips: int = 4            # clips drawn in the event-timeline figure


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = dataclasses.field(default_factory=PostprocessConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
