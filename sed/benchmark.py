"""Throughput: log-mel extraction (ours, parallel, into HDF5) against a plain per-file librosa loop
like the course script, and training clips/s of the config's model.

    python -m sed.benchmark --config sed/configs/demo.yaml [--clips 64] [--rounds 3] [--train-steps 5] [key=value ...]

Extraction runs alternate in this process (plain loop, ours with `data.workers`, ours in one process;
the order turns round every round); ours is timed from creating its pool to the merged HDF5 file, the
pool's start-up included (the fork server starts in the first round; later rounds reuse it, as the
splits of one prepare.py run do). Printed: clips/s of every round, and the median over rounds of
ours / plain.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import librosa
import torch

from common.config import cli_main, parse_args
from common.device import pick_device
from sed.config import CLASSES, Config
from sed.data import frames_per_clip, hop_samples, read_weak_csv
from sed.models import build_model
from sed.prepare import ExtractionPool, extract_split, label_files, synth_data, win_samples


def plain_loop(paths: list[Path], feat) -> float:
    """The course script's way: librosa.load (resampling) + melspectrogram + power_to_db, one file at a time."""
    start = time.time()
    for path in paths:
        audio, sr = librosa.load(path, sr=feat.sample_rate)
        mel = librosa.feature.melspectrogram(y=audio, sr=sr, n_fft=feat.n_fft, hop_length=hop_samples(feat),
                                             win_length=win_samples(feat), n_mels=feat.n_mels)
        librosa.power_to_db(mel)
    return len(paths) / (time.time() - start)


def our_extraction(audio_dir: Path, names: list[str], feat, workers: int, running_pool=None) -> float:
    """Clips/s of extract_split into a fresh folder: a new pool's start-up included, or (running_pool)
    through a pool that already serves, as for every split of prepare.py after the first."""
    with tempfile.TemporaryDirectory(prefix="sed_bench_") as tmp:
        start = time.time()
        if running_pool is not None:
            extract_split("bench", audio_dir, names, Path(tmp), running_pool)
        else:
            with ExtractionPool(feat, workers) as pool:
                extract_split("bench", audio_dir, names, Path(tmp), pool)
        return len(names) / (time.time() - start)


def training_throughput(cfg: Config, steps: int) -> float:
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
    pre.add_argument("--rounds", type=int, default=3)
    pre.add_argument("--train-steps", type=int, default=5, help="0 skips the training throughput")
    known, rest = pre.parse_known_args(argv)
    cfg, _ = parse_args(Config, rest, description=__doc__.split("\n\n")[0])
    root = synth_data(cfg)  # the demo generates its audio
    names = list(read_weak_csv(root / label_files(cfg.data, root)["weak_csv"]))[:known.clips]
    audio_dir = root / cfg.data.weak_audio
    paths = [audio_dir / n for n in names]
    plain_loop(paths[:1], cfg.features)  # warm-up: librosa loads its modules lazily, not timed
    workers = ExtractionPool(cfg.features, cfg.data.workers).workers  # capped at the available cores
    running_pool = ExtractionPool(cfg.features, workers)
    our_extraction(audio_dir, names[:2 * workers], cfg.features, workers, running_pool)  # its start-up
    runs = {"plain_librosa_loop": lambda: plain_loop(paths, cfg.features),
            f"ours_{workers}_workers": lambda: our_extraction(audio_dir, names, cfg.features, workers),
            f"ours_{workers}_workers_running_pool": lambda: our_extraction(audio_dir, names, cfg.features, workers,
                                                                           running_pool),
            "ours_1_process": lambda: our_extraction(audio_dir, names, cfg.features, 1)}
    rates = {name: [] for name in runs}
    with running_pool:
        for round_ in range(known.rounds):
            for name in (list(runs) if round_ % 2 == 0 else reversed(runs)):
                rates[name].append(runs[name]())
    results = {"clips": len(names), "rounds": known.rounds}
    results.update({f"{name}_clips_per_s": [round(rate, 1) for rate in r] for name, r in rates.items()})
    for name in list(runs)[1:]:
        results[f"{name}_vs_plain_loop_median"] = statistics.median(
            ours / plain for ours, plain in zip(rates[name], rates["plain_librosa_loop"]))
    if known.train_steps:
        results["train_clips_per_s"] = training_throughput(cfg, known.train_steps)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=2))
    return results


if __name__ == "__main__":
    main()
