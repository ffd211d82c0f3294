"""The config schema shared by prepare.py, train.py and evaluate.py (one YAML file drives all three)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from common.config import RunConfig, bounded

# DCASE2018 Task 4 classes, in the order of the model's outputs.
CLASSES = ["Alarm_bell_ringing", "Blender", "Cat", "Dishes", "Dog", "Electric_shaver_toothbrush",
           "Frying", "Running_water", "Speech", "Vacuum_cleaner"]


@dataclasses.dataclass
class SynthConfig:
    """The generated DCASE-layout set (sed/synth.py) used by the demo and the tests."""
    enabled: bool = False                  # generate it into data.root when missing
    train_clips: int = bounded(300, ge=1)  # weakly labelled
    test_clips: int = bounded(60, ge=1)    # strongly labelled, for the post-processing sweep
    eval_clips: int = bounded(100, ge=1)   # strongly labelled, for the final numbers
    unlabelled_clips: int = bounded(0, ge=0)  # no labels (audio/train/unlabel_in_domain), for mean teacher
    sample_rate: int = bounded(16000, ge=1)
    seed: int = bounded(1234, ge=0)


@dataclasses.dataclass
class DataConfig:
    root: str = "data/dcase2018_task4"         # DCASE2018 Task 4 folder (audio/, metadata/ or label/)
    # "dcase": the download's metadata/ folder; "course": the course's copy (label/train/weak.csv,
    # label/eval/eval.csv, label/class_label_indices.txt, no test split), whose paths replace the
    # three csv defaults below (a path you set yourself is kept); "auto": course if <root>/label exists
    layout: Literal["auto", "dcase", "course"] = "auto"
    weak_csv: str = "metadata/train/weak.csv"  # filename<TAB>label,label
    weak_audio: str = "audio/train/weak"
    test_csv: str = "metadata/test/test.csv"   # strong labels; picks post-processing ("" = none)
    test_audio: str = "audio/test"
    eval_csv: str = "metadata/eval/eval.csv"   # strong labels; the reported numbers
    eval_audio: str = "audio/eval"
    # folders of unlabelled clips (every *.wav), e.g. [audio/train/unlabel_in_domain]; read only by
    # train.method=mean_teacher and train.pseudo_labels_from
    unlabelled_audio: list[str] = dataclasses.field(default_factory=list)
    features_dir: str = ""                     # HDF5 features; "" = <root>/features/<settings>
    workers: int = bounded(4, ge=1)            # feature-extraction processes
    # weak clips held out (multi-label stratified): valid mAP picks best.pt, cuts the lr, stops early
    valid_fraction: float = bounded(0.1, gt=0, lt=1)
    split_seed: int = bounded(0, ge=0)
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)


@dataclasses.dataclass
class FeatureConfig:
    """Log-mel settings (the course's: 44.1 kHz, n_fft 2048, 40 ms window, 20 ms hop, 64 bands)."""
    sample_rate: int = bounded(44100, ge=1)  # audio at another rate is resampled
    n_fft: int = bounded(2048, ge=1)
    win_ms: float = bounded(40.0, gt=0)
    hop_ms: float = bounded(20.0, gt=0)
    n_mels: int = bounded(64, ge=1)
    fmin_hz: float = bounded(0.0, ge=0)
    fmax_hz: float = bounded(0.0, ge=0)      # 0 = sample_rate / 2
    clip_s: float = bounded(10.0, gt=0)      # clips are padded / cut to this length


@dataclasses.dataclass
class ModelConfig:
    name: Literal["crnn", "cdur"] = "crnn"
    conv_channels: list[int] = bounded([64, 64, 64], ge=1)
    freq_pool: list[int] = bounded([4, 4, 4], ge=1)
    time_pool: list[int] = bounded([1, 1, 1], ge=1)
    rnn_hidden: int = bounded(64, ge=1)  # per direction
    rnn_layers: int = bounded(2, ge=1)
    dropout: float = bounded(0.2, ge=0, lt=1)
    pooling: Literal["linear_softmax", "attention", "max", "mean"] = "linear_softmax"
    context_gating: bool = False  # crnn: gated linear units (conv * sigmoid(gate conv)) instead of ReLU


@dataclasses.dataclass
class AugmentConfig:
    spec_augment: bool = False
    time_masks: int = bounded(2, ge=0)
    time_mask_frames: int = bounded(40, ge=0)    # widest mask
    freq_masks: int = bounded(2, ge=0)
    freq_mask_bands: int = bounded(8, ge=0)
    mixup: bool = False
    mixup_alpha: float = bounded(0.2, gt=0)
    time_shift: bool = False
    time_shift_frames: int = bounded(100, ge=0)  # roll by up to +-this many frames
    noise: bool = False
    noise_std: float = bounded(0.1, ge=0)        # on normalised features


@dataclasses.dataclass
class MeanTeacherConfig:
    """train.method=mean_teacher (Tarvainen & Valpola 2017): the teacher is an exponential moving average
    of the student's weights; a consistency loss pulls the student's outputs on unlabelled (and labelled)
    clips towards the teacher's. An epoch is one pass over the weak train clips."""
    unlabelled_fraction: float = bounded(0.5, gt=0, lt=1)  # of each batch, the rest are weak clips
    ema_decay: float = bounded(0.999, ge=0, lt=1)          # teacher = decay * teacher + (1 - decay) * student
    consistency_weight: float = bounded(2.0, ge=0)         # on MSE(clip probs) + frame_weight * MSE(frame probs)
    frame_weight: float = bounded(1.0, ge=0)               # 0: consistency of the clip probabilities only
    rampup_epochs: float = bounded(10.0, ge=0)             # weight * exp(-5 (1 - t)^2) up to this epoch
    noise_std: float = bounded(0.15, ge=0)                 # Gaussian input noise, drawn apart for each model
    evaluate: Literal["teacher", "student"] = "teacher"    # the model valid mAP, best.pt and evaluate.py use


@dataclasses.dataclass
class TrainConfig:
    epochs: int = bounded(100, ge=1)
    batch_size: int = bounded(32, ge=1)
    lr: float = bounded(1e-3, gt=0)
    weight_decay: float = bounded(1e-2, ge=0)
    grad_clip: float = bounded(5.0, ge=0)         # 0 = off
    plateau_patience: int = bounded(3, ge=0)      # epochs without a better valid mAP before the lr is cut
    plateau_factor: float = bounded(0.5, gt=0, lt=1)
    early_stop_patience: int = bounded(10, ge=1)  # epochs without a better valid mAP before training stops
    log_every_steps: int = bounded(20, ge=1)
    # weak clips in batch order: "shuffle" (each once per epoch) or "class_balanced" (each draw picks a
    # class uniformly, then one of its clips: rare classes are seen as often as common ones)
    sampler: Literal["shuffle", "class_balanced"] = "shuffle"
    method: Literal["supervised", "mean_teacher"] = "supervised"
    mean_teacher: MeanTeacherConfig = dataclasses.field(default_factory=MeanTeacherConfig)
    # a trained sed run (its best.pt) or checkpoint: the unlabelled clips it tags (clip probability above
    # its postprocess.tag_threshold) join the weak train clips with those tags (the DCASE2018 baseline's
    # second pass; sed/pseudo_labels.py). "" = off
    pseudo_labels_from: str = ""


@dataclasses.dataclass
class PostprocessConfig:
    """Frame probabilities -> events. The sweep on the strong test split replaces threshold and
    median_s per class; the remaining settings apply as given."""
    threshold: float = bounded(0.5, ge=0, le=1)
    low_threshold_ratio: float = bounded(0.5, ge=0, le=1)  # hysteresis: an event extends while prob > ratio * threshold
    median_s: float = bounded(0.5, ge=0)
    min_event_s: float = bounded(0.1, ge=0)
    min_gap_s: float = bounded(0.1, ge=0)                  # gaps shorter than this are filled
    gate_by_clip: bool = True                              # keep events only for classes tagged in the clip
    tag_threshold: float = bounded(0.5, ge=0, le=1)
    sweep: bool = True
    sweep_thresholds: list[float] = bounded([0.2, 0.3, 0.4, 0.5, 0.6, 0.7], ge=0, le=1)
    sweep_median_s: list[float] = bounded([0.0, 0.1, 0.3, 0.5, 1.0], ge=0)
    # > 0: each class's median window is this fraction of its mean event duration on the test split
    # (long windows for long sounds like Frying, short ones for Dog); the sweep then picks thresholds only
    median_duration_fraction: float = bounded(0.0, ge=0)
    timeline_clips: int = bounded(4, ge=0)                 # clips drawn in the event-timeline figure


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = dataclasses.field(default_factory=PostprocessConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
