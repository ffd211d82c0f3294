"""The course layout of DCASE2021 Task 1B embeddings: fold CSVs, one HDF5 file set per modality,
the global mean/std files; the location-grouped train/validation split; the clip dataset.

Fold CSV (tab separated, one header line):
    filename_audio          filename_video          scene_label
    audio/airport-lisbon-1000-40000-a.wav   video/airport-lisbon-1000-40000-a.mp4   airport
The clip's stem (`airport-lisbon-1000-40000-a`) is its key in the HDF5 files; the recording location
is `<city>-<location id>` (`lisbon-1000`): every 10-s segment of one location shares it.

HDF5 (OpenL3 in the course: 512-d per frame). The reader looks a clip up by its stem anywhere in
the listed files, so these layouts all work:
    <class_idx>/audio/<stem>        (frames, dim) dataset     the course files
    <class_idx>/audio/<stem>/<i>    (dim,) dataset per frame  the DCASE baseline's files
    <stem>                          (frames, dim) dataset     a flat file
Keys under a folder named after the other modality are ignored, so one file may hold both.
"""
from __future__ import annotations

import csv
import dataclasses
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import torch

from common.config import ConfigError, bounded, resolve_path

SCENE_CLASSES = ["airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
                 "street_pedestrian", "street_traffic", "tram"]
MODALITIES = ("audio", "video")
REFETCH = ("copy or download it again (av_scene/README.md, section Data), or delete it and run "
           "python -m av_scene.extract_features again")


@dataclasses.dataclass
class DataConfig:
    root: str = "data/av_scene"          # dataset folder; the paths below are relative to it
    synthetic: bool = False              # generate the synthetic demo set into root if it is absent
    train_csv: str = "evaluation_setup/fold1_train.csv"
    test_csv: str = "evaluation_setup/fold1_evaluate.csv"
    valid_csv: str = ""                  # empty: hold out whole locations of train_csv
    valid_fraction: float = bounded(0.15, gt=0, lt=1)  # share of each class's training clips held out (by location)
    # draws the held-out locations; apart from run.seed, so that runs with other seeds validate (choose
    # best.pt, fit late fusion and temperature) on the same clips
    split_seed: int = bounded(0, ge=0)
    audio_h5: list[str] = dataclasses.field(default_factory=lambda: [
        "audio_features_data/train.hdf5", "audio_features_data/val.hdf5", "audio_features_data/test.hdf5"])
    video_h5: list[str] = dataclasses.field(default_factory=lambda: [
        "video_features_data/train.hdf5", "video_features_data/val.hdf5", "video_features_data/test.hdf5"])
    audio_norm: str = "audio_features_data/global_mean_std.npz"  # empty: computed on the training split
    video_norm: str = "video_features_data/global_mean_std.npz"
    num_frames: int = bounded(96, ge=1)  # crop (random offset when training) or zero-pad to this
    random_crop: bool = True
    batch_size: int = bounded(128, ge=1)
    num_workers: int = bounded(0, ge=0)


@dataclasses.dataclass
class Clip:
    stem: str
    label: int
    location: str


def parse_stem(filename: str) -> str:
    return Path(filename.strip()).stem


def location_of(stem: str) -> str:
    """`airport-lisbon-1000-40000-a` -> `lisbon-1000` (scene names use `_`, never `-`)."""
    parts = stem.split("-")
    if len(parts) < 4:
        raise ConfigError(f"clip name {stem!r} does not look like <scene>-<city>-<location>-<segment>; "
                          f"the location-grouped split needs that pattern (or set data.valid_csv)")
    return f"{parts[1]}-{parts[2]}"


def read_fold_csv(path: Path) -> list[Clip]:
    """Clips of one fold CSV, labelled with indices into SCENE_CLASSES."""
    if not path.is_file():
        raise ConfigError(f"fold file not found: {path} (set data.root to the embeddings folder and check "
                          f"data.*_csv; av_scene/README.md, section Data, says how to get it)")
    clips = []
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or [c.strip() for c in rows[0][:3]] != ["filename_audio", "filename_video", "scene_label"]:
        raise ConfigError(f"{path}: the first line must be the tab-separated header "
                          f"filename_audio, filename_video, scene_label")
    for line_number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 3:
            raise ConfigError(f"{path} line {line_number}: expected 3 tab-separated fields "
                              f"(audio file, video file, scene label), got {row!r}")
        audio_file, video_file, label = (c.strip() for c in row[:3])
        if label not in SCENE_CLASSES:
            raise ConfigError(f"{path} line {line_number}: unknown scene label {label!r}; "
                              f"expected one of {', '.join(SCENE_CLASSES)}")
        if parse_stem(audio_file) != parse_stem(video_file):
            raise ConfigError(f"{path} line {line_number}: audio {audio_file} and video {video_file} "
                              f"name different clips")
        stem = parse_stem(audio_file)
        clips.append(Clip(stem, SCENE_CLASSES.index(label), location_of(stem)))
    if not clips:
        raise ConfigError(f"{path} lists no clips")
    return clips


def split_by_location(clips: list[Clip], valid_fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Hold out whole recording locations, about `valid_fraction` of each class's clips, so no
    location is in both parts. A location counts for its most frequent class; every class keeps at
    least one training location."""
    by_location = defaultdict(list)
    for clip in clips:
        by_location[clip.location].append(clip)
    locations_of_class = defaultdict(list)
    for location, members in sorted(by_location.items()):
        labels = [c.label for c in members]
        locations_of_class[max(set(labels), key=labels.count)].append(location)
    rng = np.random.default_rng(seed)
    valid_locations = set()
    for label in sorted(locations_of_class):
        locations = locations_of_class[label]
        target = valid_fraction * sum(len(by_location[loc]) for loc in locations)
        taken = 0
        for i in rng.permutation(len(locations))[:max(0, len(locations) - 1)]:
            size = len(by_location[locations[i]])
            if taken > 0 and taken + size / 2 > target:  # closest to the target, at least one location
                break
            valid_locations.add(locations[i])
            taken += size
    train = [c for c in clips if c.location not in valid_locations]
    valid = [c for c in clips if c.location in valid_locations]
    return train, valid


class EmbeddingStore:
    """Clip stem -> (frames, dim) array across a list of HDF5 files of one modality."""

    def __init__(self, paths: list[Path], modality: str):
        self.modality = modality
        other = [m for m in MODALITIES if m != modality]
        self.where: dict[str, tuple[int, str]] = {}
        self.files = []
        for path in paths:
            if not path.is_file():
                continue  # e.g. no val.hdf5: the CSVs decide which clips must be found
            file_index = len(self.files)

            def visit(name, obj, file_index=file_index):
                parts = name.split("/")
                if any(p in other for p in parts[:-1]) or not isinstance(obj, h5py.Dataset):
                    return
                if obj.ndim == 2:
                    self.where.setdefault(parts[-1], (file_index, name))
                elif obj.ndim == 1 and parts[-1].isdigit() and len(parts) > 1:  # one dataset per frame
                    self.where.setdefault(parts[-2], (file_index, "/".join(parts[:-1])))
            try:
                self.files.append(h5py.File(path, "r"))
                self.files[file_index].visititems(visit)
            except (OSError, RuntimeError) as err:  # what h5py raises for truncated or overwritten files
                self.close()
                raise ConfigError(f"{path}: not a readable HDF5 file ({err}); it is truncated or damaged "
                                  f"(an interrupted copy, download or extraction?): {REFETCH}") from None
        if not self.files:
            raise ConfigError(f"none of the {modality} HDF5 files exists: {', '.join(map(str, paths))} "
                              f"(set data.root and data.{modality}_h5)")

    def load(self, stem: str) -> np.ndarray:
        file_index, key = self.where[stem]
        try:
            obj = self.files[file_index][key]
            if isinstance(obj, h5py.Dataset):
                return obj[()]
            return np.stack([obj[k][()] for k in sorted(obj.keys(), key=int)])
        except (OSError, RuntimeError) as err:
            raise ConfigError(f"{self.files[file_index].filename}: cannot read clip {stem} ({err}); the file "
                              f"is damaged: {REFETCH}") from None

    def close(self) -> None:
        for handle in self.files:
            handle.close()


def crop_or_pad(frames: np.ndarray, num_frames: int, offset: int = 0) -> np.ndarray:
    """(T, D) -> (num_frames, D): frames [offset, offset + num_frames), zero rows after the end."""
    window = frames[offset:offset + num_frames]
    if len(window) < num_frames:
        pad = np.zeros((num_frames - len(window), frames.shape[1]), dtype=window.dtype)
        window = np.concatenate([window, pad])
    return window


def load_normalisation(path_text: str, root: Path, frames: list[np.ndarray], what: str):
    """(mean, std) from a course npz (global_mean/global_std, or mean/std), or computed on `frames`."""
    if not path_text:
        stacked = np.concatenate(frames).astype(np.float64)
        return stacked.mean(0).astype(np.float32), stacked.std(0).astype(np.float32)
    path = resolve_data_path(root, path_text)
    if not path.is_file():
        raise ConfigError(f"normalisation file not found: {path} (set data.{what}_norm, or leave it "
                          f"empty to compute mean/std on the training split)")
    stats = np.load(path)
    names = [("global_mean", "global_std"), ("mean", "std")]
    for mean_key, std_key in names:
        if mean_key in stats and std_key in stats:
            return stats[mean_key].astype(np.float32), stats[std_key].astype(np.float32)
    raise ConfigError(f"{path} holds {list(stats.keys())}; expected global_mean and global_std")


def resolve_data_path(root: Path, path_text: str) -> Path:
    path = Path(path_text)
    return path if path.is_absolute() else root / path


class SceneDataset(torch.utils.data.Dataset):
    """Normalised, cropped clips: {"audio": (num_frames, Da), "video": (num_frames, Dv), "label", "index"}.

    Training crops start at an offset drawn from (seed, epoch, index) alone, so the order of
    loading (workers, resume) never changes what a clip looks like; evaluation takes the first
    num_frames frames like the course code."""

    def __init__(self, clips: list[Clip], audio: list[np.ndarray], video: list[np.ndarray], norm: dict,
                 num_frames: int, random_crop: bool = False, seed: int = 0):
        self.clips, self.audio, self.video, self.norm = clips, audio, video, norm
        self.num_frames, self.random_crop, self.seed = num_frames, random_crop, seed
        self.epoch = 0
        self.labels = np.array([c.label for c in clips], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def _frames(self, frames: np.ndarray, modality: str, rng) -> torch.Tensor:
        extra = len(frames) - self.num_frames
        offset = int(rng.integers(extra + 1)) if (rng is not None and extra > 0) else 0
        mean, std = self.norm[modality]
        normalised = (frames.astype(np.float32) - mean) / np.maximum(std, 1e-8)
        return torch.from_numpy(crop_or_pad(normalised, self.num_frames, offset))

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, index)) if self.random_crop else None
        return {"audio": self._frames(self.audio[index], "audio", rng),
                "video": self._frames(self.video[index], "video", rng),
                "label": int(self.labels[index]), "index": index}


def load_splits(cfg: DataConfig, seed: int = 0) -> dict[str, SceneDataset]:
    """{"train", "valid", "test"} datasets from the course layout (embeddings held in memory as float16).
    seed (run.seed) draws the training crops; cfg.split_seed the validation locations."""
    root = resolve_path(cfg.root)
    if cfg.synthetic:
        from av_scene.synthetic import make_synthetic_dataset
        make_synthetic_dataset(root)
    train_clips = read_fold_csv(resolve_data_path(root, cfg.train_csv))
    if cfg.valid_csv:
        valid_clips = read_fold_csv(resolve_data_path(root, cfg.valid_csv))
    else:
        train_clips, valid_clips = split_by_location(train_clips, cfg.valid_fraction, cfg.split_seed)
    test_clips = read_fold_csv(resolve_data_path(root, cfg.test_csv))
    parts = {"train": train_clips, "valid": valid_clips, "test": test_clips}
    arrays = {name: {} for name in parts}
    for modality in MODALITIES:
        paths = [resolve_data_path(root, p) for p in getattr(cfg, f"{modality}_h5")]
        store = EmbeddingStore(paths, modality)
        try:
            for name, clips in parts.items():
                missing = [c.stem for c in clips if c.stem not in store.where]
                if missing:
                    raise ConfigError(f"{len(missing)} {name} clips have no {modality} embedding in "
                                      f"{', '.join(map(str, paths))}, e.g. {missing[0]} (wrong data.root "
                                      f"or data.{modality}_h5?)")
                arrays[name][modality] = [store.load(c.stem).astype(np.float16) for c in clips]
        finally:
            store.close()
    dims = {}
    for modality in MODALITIES:
        found = {a.shape[1] for name in parts for a in arrays[name][modality]}
        if len(found) != 1:
            raise ConfigError(f"{modality} embeddings have different sizes {sorted(found)}; one size expected")
        dims[modality] = found.pop()
    norm = {}
    for modality in MODALITIES:
        mean, std = load_normalisation(getattr(cfg, f"{modality}_norm"), root, arrays["train"][modality],
                                       modality)
        if mean.shape != (dims[modality],):
            raise ConfigError(f"{modality} normalisation has shape {mean.shape}, the embeddings have "
                              f"{dims[modality]} dimensions")
        norm[modality] = (mean, std)
    return {name: SceneDataset(clips, arrays[name]["audio"], arrays[name]["video"], norm, cfg.num_frames,
                               random_crop=cfg.random_crop and name == "train", seed=seed)
            for name, clips in parts.items()}


def feature_dims(dataset: SceneDataset) -> tuple[int, int]:
    return dataset.audio[0].shape[1], dataset.video[0].shape[1]
