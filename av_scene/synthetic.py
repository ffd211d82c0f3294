"""A synthetic audio-visual scene set in the exact course layout, for the demo and the tests.

    <root>/evaluation_setup/fold1_train.csv, fold1_evaluate.csv
        filename_audio<TAB>filename_video<TAB>scene_label
        audio/airport-lisbon-1000-40000-a.wav<TAB>video/airport-lisbon-1000-40000-a.mp4<TAB>airport
    <root>/audio_features_data/{train,test}.hdf5   keys <class_idx>/audio/<stem>, (frames, 512) float32
    <root>/video_features_data/{train,test}.hdf5   keys <class_idx>/video/<stem>
    <root>/{audio,video}_features_data/global_mean_std.npz   global_mean, global_std over train

Built so that the fusion analysis has something real to find:
- audio cannot tell airport / shopping_mall / metro_station apart (one shared audio prototype),
  video can; video cannot tell bus / tram / metro apart, audio can;
- street_pedestrian needs both: its audio matches public_square, its video matches street_traffic;
- park is easy in both;
- every recording location adds its own offset (so a split that leaks locations flatters validation);
- in a fraction of clips one modality is misleading: it carries another class's prototype at lower
  strength (a tram passing the park), so audio and video disagree and the more confident one is right.
Unimodal accuracy is therefore capped near 0.7 while fusion can approach 1.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np

from av_scene.data import SCENE_CLASSES

CITIES = ["amsterdam", "barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "prague",
          "stockholm", "vienna"]
# Which prototype each class uses per modality: equal ids = indistinguishable in that modality.
AUDIO_PROTOTYPE = {"airport": 0, "shopping_mall": 0, "metro_station": 0, "bus": 1, "tram": 2, "metro": 3,
                   "park": 4, "street_traffic": 5, "street_pedestrian": 6, "public_square": 6}
VIDEO_PROTOTYPE = {"airport": 0, "shopping_mall": 1, "metro_station": 2, "bus": 3, "tram": 3, "metro": 3,
                   "park": 4, "street_traffic": 5, "street_pedestrian": 5, "public_square": 6}

PARAMS = {"version": 1, "dim": 512, "train_locations_per_class": 10, "test_locations_per_class": 4,
          "clips_per_location": 8, "min_frames": 20, "max_frames": 28, "signal": 0.35,
          "location_std": 0.4, "noise_std": 1.0, "conflict_rate": 0.15, "conflict_signal": 0.2,
          "offset": 1.5, "scale": 2.0}


def _clip_frames(rng, prototype, wrong_prototype, location, p) -> np.ndarray:
    """(frames, dim): the class prototype (or a weaker misleading one) on some frames, the location
    offset, noise; then an affine map so the raw values need the global normalisation."""
    num_frames = int(rng.integers(p["min_frames"], p["max_frames"] + 1))
    if wrong_prototype is None:
        signal, strength = prototype, p["signal"]
    else:
        signal, strength = wrong_prototype, p["conflict_signal"]
    present = rng.random((num_frames, 1)) < 0.8  # the scene's cue is audible/visible most of the time
    frames = (present * strength * signal + location
              + p["noise_std"] * rng.standard_normal((num_frames, p["dim"])))
    return (p["offset"] + p["scale"] * frames).astype(np.float32)


def make_synthetic_dataset(root: str | Path, seed: int = 0, **overrides) -> Path:
    """Write the set under `root` unless it is already there with the same parameters; returns root.
    `overrides` change PARAMS (the tests use a smaller `dim` and fewer clips)."""
    root = Path(root)
    stamp = root / "synthetic.json"
    unknown = set(overrides) - set(PARAMS)
    if unknown:
        raise ValueError(f"unknown synthetic parameters {sorted(unknown)}; known: {sorted(PARAMS)}")
    params = {**PARAMS, **overrides, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return root
    rng = np.random.default_rng(seed)
    dim = params["dim"]
    audio_protos = rng.standard_normal((max(AUDIO_PROTOTYPE.values()) + 1, dim))
    video_protos = rng.standard_normal((max(VIDEO_PROTOTYPE.values()) + 1, dim))
    splits = {"train": ("fold1_train.csv", params["train_locations_per_class"]),
              "test": ("fold1_evaluate.csv", params["test_locations_per_class"])}
    (root / "evaluation_setup").mkdir(parents=True, exist_ok=True)
    features = {m: root / f"{m}_features_data" for m in ("audio", "video")}
    for folder in features.values():
        folder.mkdir(parents=True, exist_ok=True)
    location_number = 1000
    train_sums = {m: [np.zeros(dim), np.zeros(dim), 0] for m in features}
    for split, (csv_name, locations_per_class) in splits.items():
        rows = []
        files = {m: h5py.File(features[m] / f"{split}.hdf5", "w") for m in features}
        try:
            for class_idx, scene in enumerate(SCENE_CLASSES):
                for _ in range(locations_per_class):
                    city = CITIES[int(rng.integers(len(CITIES)))]
                    location_number += 1
                    offsets = {m: params["location_std"] * rng.standard_normal(dim) for m in features}
                    for clip in range(params["clips_per_location"]):
                        stem = f"{scene}-{city}-{location_number}-{40000 + 10 * clip}-a"
                        wrong = {"audio": None, "video": None}
                        if rng.random() < params["conflict_rate"]:
                            other = SCENE_CLASSES[(class_idx + int(rng.integers(1, 10))) % 10]
                            misled = "audio" if rng.random() < 0.5 else "video"
                            wrong[misled] = (audio_protos[AUDIO_PROTOTYPE[other]] if misled == "audio"
                                             else video_protos[VIDEO_PROTOTYPE[other]])
                        protos = {"audio": audio_protos[AUDIO_PROTOTYPE[scene]],
                                  "video": video_protos[VIDEO_PROTOTYPE[scene]]}
                        for m in features:
                            frames = _clip_frames(rng, protos[m], wrong[m], offsets[m], params)
                            files[m].create_dataset(f"{class_idx}/{m}/{stem}", data=frames)
                            if split == "train":
                                sums = train_sums[m]
                                sums[0] += frames.sum(0)
                                sums[1] += (frames.astype(np.float64) ** 2).sum(0)
                                sums[2] += len(frames)
                        rows.append((f"audio/{stem}.wav", f"video/{stem}.mp4", scene))
        finally:
            for f in files.values():
                f.close()
        with open(root / "evaluation_setup" / csv_name, "w", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(["filename_audio", "filename_video", "scene_label"])
            writer.writerows(rows)
    for m, (total, total_sq, count) in train_sums.items():
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
        np.savez(features[m] / "global_mean_std.npz", global_mean=mean.astype(np.float32),
                 global_std=std.astype(np.float32))
    stamp.write_text(json.dumps(params, indent=2) + "\n")
    return root
