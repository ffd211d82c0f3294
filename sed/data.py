"""Reading the DCASE2018 Task 4 label files, the multi-label stratified train/valid split, and the
in-memory clip datasets built from the HDF5 features that prepare.py writes."""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import torch

from common.config import ConfigError
from sed.config import CLASSES


def _check_labels(labels, path, line_no):
    for label in labels:
        if label not in CLASSES:
            raise ConfigError(f"{path}:{line_no}: unknown event label {label!r}; "
                              f"the DCASE2018 Task 4 classes are {', '.join(CLASSES)}")


def check_class_list(path: str | Path) -> None:
    """The course's label/class_label_indices.txt: one class per line, an index and a name (in either
    order, separated by tabs, commas or spaces; a header line is allowed). The model's outputs are
    the DCASE2018 Task 4 classes (CLASSES, by name), so the file must list exactly those."""
    path = Path(path)
    listed = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        fields = [f for f in re.split(r"[\t, ]+", line.strip()) if f]
        if not fields:
            continue
        numbers = [f for f in fields if f.isdigit()]
        names = [f for f in fields if not f.isdigit()]
        if len(numbers) != 1 or len(names) != 1:
            if line_no == 1 and not numbers:
                continue  # a header
            raise ConfigError(f"{path}:{line_no}: expected '<index> <class name>', got {line!r}")
        listed[names[0]] = int(numbers[0])
    if set(listed) != set(CLASSES):
        extra, missing = sorted(set(listed) - set(CLASSES)), sorted(set(CLASSES) - set(listed))
        raise ConfigError(f"{path} lists other classes than DCASE2018 Task 4's ten (not ours: "
                          f"{', '.join(extra) or '-'}; missing: {', '.join(missing) or '-'}); this pipeline is "
                          f"built for those ten")


def read_weak_csv(path: str | Path) -> dict[str, list[str]]:
    """`filename<TAB>label,label` (header line optional) -> {filename: [labels]}."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weak label file not found: {path} (set data.root / data.weak_csv)")
    clips = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or (line_no == 1 and line.startswith("filename")):
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise ConfigError(f"{path}:{line_no}: expected 'filename<TAB>label,label', got {line!r}")
        labels = sorted(set(fields[1].split(",")))
        _check_labels(labels, path, line_no)
        clips[fields[0]] = labels
    if not clips:
        raise ConfigError(f"{path} has no clips; it should hold lines 'filename<TAB>label,label'")
    return clips


def read_strong_csv(path: str | Path) -> dict[str, list[tuple[float, float, str]]]:
    """`filename<TAB>onset<TAB>offset<TAB>event_label` -> {filename: [(onset_s, offset_s, label)]}.
    A line with the filename only (or empty onset/offset/label) lists a clip without events."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"strong label file not found: {path} (set data.root / data.eval_csv / data.test_csv)")
    clips: dict[str, list] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or (line_no == 1 and line.startswith("filename")):
            continue
        fields = line.split("\t")
        events = clips.setdefault(fields[0], [])
        if len(fields) == 1 or all(not f.strip() for f in fields[1:]):
            continue
        try:
            onset_s, offset_s, label = float(fields[1]), float(fields[2]), fields[3]
        except (IndexError, ValueError):
            raise ConfigError(f"{path}:{line_no}: expected 'filename<TAB>onset<TAB>offset<TAB>event_label', "
                              f"got {line!r}") from None
        _check_labels([label], path, line_no)
        if offset_s <= onset_s:
            raise ConfigError(f"{path}:{line_no}: offset {offset_s} is not after onset {onset_s}")
        events.append((onset_s, offset_s, label))
    if not clips:
        raise ConfigError(f"{path} has no clips; it should hold lines 'filename<TAB>onset<TAB>offset<TAB>label'")
    return clips


def label_matrix(label_lists: list[list[str]]) -> np.ndarray:
    """(clips, classes) multi-hot float32 matrix."""
    targets = np.zeros((len(label_lists), len(CLASSES)), dtype=np.float32)
    for i, labels in enumerate(label_lists):
        for label in labels:
            targets[i, CLASSES.index(label)] = 1.0
    return targets


def stratified_split(targets: np.ndarray, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Iterative multi-label stratification (Sechidis et al., 2011): clips carrying the rarest
    remaining label are placed first, each into the split that still needs that label most, so every
    class keeps about `valid_fraction` of its clips in valid. Returns sorted (train_idx, valid_idx)."""
    rng = np.random.default_rng(seed)
    n = len(targets)
    fractions = np.array([1 - valid_fraction, valid_fraction])
    need_total = fractions * n
    need_label = fractions[:, None] * targets.sum(0)[None, :]
    split_of = np.full(n, -1)
    remaining = np.ones(n, dtype=bool)
    while remaining.any():
        counts = targets[remaining].sum(0)
        if counts.sum() == 0:  # clips without labels: fill by size only
            for i in rng.permutation(np.flatnonzero(remaining)):
                split_of[i] = int(np.argmax(need_total))
                need_total[split_of[i]] -= 1
            break
        rarest = np.argmin(np.where(counts > 0, counts, np.inf))
        for i in rng.permutation(np.flatnonzero(remaining & (targets[:, rarest] > 0))):
            best = np.flatnonzero(need_label[:, rarest] == need_label[:, rarest].max())
            if len(best) > 1:
                best = best[need_total[best] == need_total[best].max()]
            split = int(rng.choice(best))
            split_of[i] = split
            remaining[i] = False
            need_total[split] -= 1
            need_label[split] -= targets[i]
    return np.flatnonzero(split_of == 0), np.flatnonzero(split_of == 1)


def frames_per_clip(feat) -> int:
    """Frames of a `clip_s` clip with centred STFT frames (librosa's default)."""
    hop = hop_samples(feat)
    return int(round(feat.clip_s * feat.sample_rate)) // hop + 1


def hop_samples(feat) -> int:
    return int(round(feat.hop_ms * feat.sample_rate / 1000))


def hop_seconds(feat) -> float:
    """The exact frame hop (hop samples / sample rate), used to turn frames into seconds."""
    return hop_samples(feat) / feat.sample_rate


def load_features(h5_path: Path, filenames: list[str], n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-mels of `filenames` padded (with each clip's minimum) or cut to `n_frames`:
    returns features (clips, n_frames, n_mels) float32 and the true lengths (clips,)."""
    with h5py.File(h5_path, "r") as h5:
        group = h5["mel"]
        n_mels = group[filenames[0]].shape[1]
        features = np.empty((len(filenames), n_frames, n_mels), dtype=np.float32)
        lengths = np.empty(len(filenames), dtype=np.int64)
        for i, name in enumerate(filenames):
            mel = group[name][:n_frames]
            features[i, :len(mel)] = mel
            features[i, len(mel):] = mel.min()
            lengths[i] = len(mel)
    return features, lengths


def band_stats(features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-band mean and standard deviation over the real (unpadded) frames: (n_mels,) each."""
    frames = np.concatenate([f[:n] for f, n in zip(features, lengths)])
    return frames.mean(0).astype(np.float32), (frames.std(0) + 1e-5).astype(np.float32)


class ClipSet(torch.utils.data.Dataset):
    """Normalised log-mels (clips, frames, n_mels) with clip targets (clips, classes). `features` (float32)
    is normalised in place and kept: the 14,412 unlabelled DCASE clips alone are 1.9 GB, and a
    normalised copy tripled the peak memory."""

    def __init__(self, features: np.ndarray, targets: np.ndarray, mean: np.ndarray, std: np.ndarray):
        features -= mean
        features /= std
        self.features = torch.from_numpy(features)
        self.targets = torch.from_numpy(targets)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i], self.targets[i]


def unlabelled_set(features: np.ndarray, n_classes: int, mean: np.ndarray, std: np.ndarray) -> ClipSet:
    """Clips without labels (`features` is normalised in place, as by ClipSet). Their targets are NaN: a
    loss that reached them would be NaN and stop the run as diverged, so they can never silently enter
    the supervised loss."""
    return ClipSet(features, np.full((len(features), n_classes), np.nan, dtype=np.float32), mean, std)


def is_labelled(targets: torch.Tensor) -> torch.Tensor:
    """(batch, classes) targets -> (batch,) bool: False for the NaN rows of unlabelled clips."""
    return ~targets.isnan().any(1)


class TrainBatches(torch.utils.data.Sampler):
    """Index batches for the training loader over ConcatDataset([weak, unlabelled]), reproducible from
    (seed, epoch, step) alone, so a resumed run sees exactly the batches of the uninterrupted one (the
    global RNG is never used). Each batch holds `n_labelled` weak clips, then `n_unlabelled` unlabelled
    clips (indices from len(weak) on). An epoch is one pass over this rank's share of the weak clips;
    the unlabelled clips come from an endless stream of shuffled passes, positioned by the global step.

        batches.set_epoch(epoch, start_step=step_in_epoch, global_step=step)

    balanced: each weak draw picks a class uniformly, then one of the clips that carry it (with
    replacement), so a rare class fills as many batch slots as a common one."""

    def __init__(self, targets: np.ndarray, n_labelled: int, n_unlabelled_clips: int = 0, n_unlabelled: int = 0,
                 balanced: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n_weak, self.n_labelled = len(targets), n_labelled
        self.n_unlabelled_clips, self.n_unlabelled = n_unlabelled_clips, n_unlabelled
        self.clips_of_class = [torch.from_numpy(np.flatnonzero(column)) for column in targets.T]
        self.balanced, self.seed, self.rank, self.world_size = balanced, seed, rank, world_size
        self.epoch, self.start_step, self.global_step = 0, 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0, global_step: int = 0) -> None:
        """start_step: batches of this epoch already trained; global_step: batches trained in all."""
        self.epoch, self.start_step, self.global_step = epoch, start_step, global_step

    def _rank_share(self, order: list[int]) -> list[int]:
        return order[:len(order) - len(order) % self.world_size][self.rank::self.world_size]

    def _weak_order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)  # as common ResumableSampler
        if not self.balanced:
            return self._rank_share(torch.randperm(self.n_weak, generator=g).tolist())
        present = [clips for clips in self.clips_of_class if len(clips)]
        classes = torch.randint(len(present), (self.n_weak,), generator=g).tolist()
        picks = torch.rand(self.n_weak, generator=g).tolist()
        return self._rank_share([int(present[c][int(u * len(present[c]))]) for c, u in zip(classes, picks)])

    def _unlabelled(self, position: int, passes: dict) -> int:
        """The unlabelled clip at `position` of this rank's endless stream, as a ConcatDataset index."""
        per_pass = self.n_unlabelled_clips // self.world_size
        n_pass, offset = divmod(position, per_pass)
        if n_pass not in passes:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + 500_009 + n_pass)
            passes[n_pass] = self._rank_share(torch.randperm(self.n_unlabelled_clips, generator=g).tolist())
        return self.n_weak + passes[n_pass][offset]

    def _n_batches(self) -> int:
        return (self.n_weak // self.world_size) // self.n_labelled

    def __iter__(self):
        weak, passes = self._weak_order(), {}
        for batch in range(self.start_step, self._n_batches()):
            labelled = weak[batch * self.n_labelled:(batch + 1) * self.n_labelled]
            first = (self.global_step + batch - self.start_step) * self.n_unlabelled
            yield labelled + [self._unlabelled(p, passes) for p in range(first, first + self.n_unlabelled)]

    def __len__(self) -> int:
        return max(0, self._n_batches() - self.start_step)
