"""The DCASE2018 Task 4 baseline's second pass: a trained model tags the unlabelled clips (clip
probability above its postprocess.tag_threshold), and those clips join the weak training clips with
the tags as their weak labels (`train.pseudo_labels_from=<run folder or checkpoint>`).

The labels are written once, at the start of the run, to <run>/pseudo_labels.tsv in the weak.csv
format (`<split>/<filename><TAB>label,label`), with every clip that got no tag listed in
<run>/pseudo_labels_untagged.txt; a resumed run reads that file, so its clips and order are the
uninterrupted run's."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import find_checkpoint, load_checkpoint
from common.config import ConfigError, load_config
from sed.config import CLASSES, Config
from sed.data import frames_per_clip, label_matrix, load_features, read_weak_csv
from sed.mean_teacher import judged_weights
from sed.models import build_model

PSEUDO_LABELS = "pseudo_labels.tsv"
UNTAGGED = "pseudo_labels_untagged.txt"


def unlabelled_splits(splits: dict, needed_by: str) -> list:
    """The prepared splits of data.unlabelled_audio (no labels of any kind)."""
    found = [split for name, split in splits.items() if name != "train" and split.strong is None]
    if not found:
        raise ConfigError(f"{needed_by} learns from unlabelled clips: set data.unlabelled_audio, "
                          f"e.g. data.unlabelled_audio=[audio/train/unlabel_in_domain]")
    return found


@torch.no_grad()
def tag_clips(source: str, splits: list, features_cfg, device, chunk: int = 256) -> tuple[np.ndarray, float, str]:
    """Clip probabilities (clips, classes) of every clip of `splits`, in order, from the run or checkpoint
    `source`, on features normalised with its own band statistics; also its tag threshold and a
    description. The source must have been trained on features made with `features_cfg`. Features are
    read `chunk` clips at a time (14,412 DCASE clips are 1.9 GB)."""
    run_dir, ckpt_path = find_checkpoint(source, "sed")
    source_cfg = load_config(Config, run_dir / "config.yaml", [])
    changed = [f"features.{key}={value} there, {getattr(features_cfg, key)} here"
               for key, value in dataclasses.asdict(source_cfg.features).items() if getattr(features_cfg, key) != value]
    if changed:
        raise ConfigError(f"train.pseudo_labels_from: {run_dir} was trained on other features ({'; '.join(changed)}); "
                          f"use the features.* of that run")
    state = load_checkpoint(ckpt_path)
    model = build_model(source_cfg.model, source_cfg.features.n_mels, len(CLASSES)).to(device)
    model.load_state_dict(judged_weights(source_cfg, state, ckpt_path))
    model.eval()
    n_frames = frames_per_clip(features_cfg)
    clip_probs = []
    for split in splits:
        for start in range(0, len(split.filenames), chunk):
            features, _ = load_features(split.h5_path, split.filenames[start:start + chunk], n_frames)
            mels = torch.from_numpy((features - state["band_mean"]) / state["band_std"]).to(device)
            clip_probs.append(model(mels)[1].float().cpu())
    return torch.cat(clip_probs).numpy(), source_cfg.postprocess.tag_threshold, f"{ckpt_path} (step {state['step']})"


def pseudo_labelled_clips(cfg: Config, splits: dict, run_dir: Path, device, is_main: bool, resuming: bool):
    """(raw features (clips, frames, bands), weak targets (clips, classes)) of the unlabelled clips that
    the source model tags. The main rank writes the labels on a fresh start (over any left by an earlier
    attempt); every later read (other ranks, --resume) takes them from the run folder."""
    labels_path = Path(run_dir) / PSEUDO_LABELS
    sources = {split.name: split for split in unlabelled_splits(splits, "train.pseudo_labels_from")}
    n_frames = frames_per_clip(cfg.features)
    if is_main and (not resuming or not labels_path.exists()):
        names = [(split.name, f) for split in sources.values() for f in split.filenames]
        probs, threshold, described = tag_clips(cfg.train.pseudo_labels_from, list(sources.values()), cfg.features,
                                                device)
        tagged = probs > threshold
        lines = [f"{split}/{name}\t{','.join(c for c, on in zip(CLASSES, row) if on)}"
                 for (split, name), row in zip(names, tagged) if row.any()]
        untagged = [f"{split}/{name}" for (split, name), row in zip(names, tagged) if not row.any()]
        if not lines:
            raise ConfigError(f"train.pseudo_labels_from: {described} tags none of the {len(names)} unlabelled "
                              f"clips above {threshold}; train it further or lower its postprocess.tag_threshold")
        (Path(run_dir) / UNTAGGED).write_text("".join(f"{name}\n" for name in untagged))
        labels_path.write_text("filename\tevent_labels\n" + "\n".join(lines) + "\n")
        print(f"pseudo-labels from {described}: {len(lines)} of {len(names)} unlabelled clips tagged "
              f"(clip probability > {threshold}; {tagged.sum() / len(lines):.2f} classes a clip), "
              f"{len(untagged)} left out (listed in {UNTAGGED})")
    labels = read_weak_csv(labels_path)
    clips: dict[str, list[str]] = {}
    for key in labels:
        split, _, name = key.partition("/")
        if split not in sources:
            raise ConfigError(f"{labels_path} names clips of {split}, which data.unlabelled_audio does not hold; "
                              f"start a new run for other unlabelled data")
        clips.setdefault(split, []).append(name)
    parts = [load_features(sources[s].h5_path, names, n_frames)[0] for s, names in clips.items()]
    features = parts[0] if len(parts) == 1 else np.concatenate(parts)
    targets = label_matrix([labels[f"{s}/{name}"] for s, names in clips.items() for name in names])
    return features, targets
