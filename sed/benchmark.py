"""Throughput: log-mel extraction (ours, parallel, into HDF5) against a plain per-file librosa loop
like the course script, and training clips/s of the config's model.

    python -m sed.benchmark --config sed/configs/demo.yaml [--clips 64] [key=value ...]
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import librosa
import torch

from common.config import cli_main, parse_args, resolve_path
from common.device import pick_device
from sed.config import CLASSES, Config
from sed.data import frames_per_clip, hop_samples, read_weak_csv
from sed.models import build_model
from sed.prepare import extract_split, log_mel, prepare_data


def plain_loop(paths: list[Path], feat) -> float:
    """The course script's way: librosa.load (resampling) + melspectrogram + power_to_db, one file at a time."""
    start = time.time()
    for path in paths:
        audio, sr = librosa.load(path, sr=feat.sample_rate)
        mel = librosa.feature.melspectrogram(y=audio, sr=sr, n_fft=feat.n_fft, hop_length=hop_samples(feat),
                                             win_length=int(round(feat.win_ms * sr / 1000)), n_mels=feat.n_mels)
        librosa.power_to_db(mel)
    return len(paths) / (time.time() - start)


def training_throughput(cfg: Config, steps: int = 5) -> float:
    device = pick_device(cfg.run.device)
    model = build_model(cfg.model, cfg.features.n_mels, len(CLASSES)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    mels = torch.randn(cfg.train.batch_size, frames_per_clip(cfg.features), cfg.features.n_mels, device=device)
    targets = (torch.rand(cfg.train.batch_size, len(CLASSES), device=device) > 0.8).float()
    for i in range(steps + 1):
        if i == 1:  # the first step warms up kernels and allocators
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.time()
        _, clip_probs = model(mels)
        loss = torch.nn.functional.binary_cross_entropy(clip_probs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.train.batch_size / (time.time() - start)


@cli_main
def main(argv=None):
    import argparse
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--clips", type=int, default=64)
    known, rest = pre.parse_known_args(argv)
    cfg, _ = parse_args(Config, rest, description=__doc__.split("\n\n")[0])
    prepare_data(cfg)  # makes sure the audio exists (the demo generates it)
    root = resolve_path(cfg.data.root)
    names = list(read_weak_csv(root / cfg.data.weak_csv))[:known.clips]
    audio_dir = root / cfg.data.weak_audio
    log_mel(audio_dir / names[0], cfg.features)  # warm-up: librosa loads its modules lazily, not timed
    results = {"clips": len(names), "plain_librosa_loop_clips_per_s": plain_loop([audio_dir / n for n in names],
                                                                                  cfg.features)}
    with tempfile.TemporaryDirectory(prefix="sed_bench_") as tmp:
        start = time.time()
        extract_split("bench", audio_dir, names, Path(tmp), cfg.features, cfg.data.workers)
        results[f"ours_{cfg.data.workers}_workers_clips_per_s"] = len(names) / (time.time() - start)
    results["train_clips_per_s"] = training_throughput(cfg)
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in results.items()}, indent=2))
    return results


if __name__ == "__main__":
    main()
