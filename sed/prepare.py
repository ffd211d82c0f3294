"""Data preparation: DCASE2018 Task 4 folder -> wav lists + 64-band log-mel features in HDF5.

    python -m sed.prepare --config sed/configs/baseline.yaml [key=value ...]

Stage by stage, each skipped when its output is there (train.py runs the same function):
  1. (demo/tests) generate the synthetic set when data.synth.enabled and it is missing;
  2. per split (train = weak.csv, test and eval = strong csv): write <split>_wavs.txt, then extract
     the log-mels that <split>.h5 does not hold yet, in `data.workers` processes. Audio that is
     missing, unreadable or empty is skipped, counted and listed in <split>_skipped.txt.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import multiprocessing
import os
import time
from pathlib import Path

import h5py
import librosa
import numpy as np
import soundfile as sf

from common.config import ConfigError, cli_main, parse_args, resolve_path
from common.log import progress
from sed.config import Config, FeatureConfig
from sed.data import hop_samples, read_strong_csv, read_weak_csv

SHARD_CLIPS = 256  # clips per part file: the most a kill during extraction can lose


@dataclasses.dataclass
class Split:
    """One prepared split: the clips that have features, with their labels."""
    name: str
    h5_path: Path
    filenames: list[str]
    weak: dict[str, list[str]]                                # clip labels (derived for strong splits)
    strong: dict[str, list[tuple[float, float, str]]] | None  # events, for test and eval


def features_dir(cfg: Config) -> Path:
    if cfg.data.features_dir:
        return resolve_path(cfg.data.features_dir)
    f = cfg.features
    tag = f"mel{f.n_mels}_sr{f.sample_rate}_fft{f.n_fft}_win{f.win_ms:g}ms_hop{f.hop_ms:g}ms"
    if f.fmin_hz or f.fmax_hz:
        tag += f"_fmin{f.fmin_hz:g}_fmax{f.fmax_hz:g}"
    return resolve_path(cfg.data.root) / "features" / tag


def log_mel(path: str | Path, feat: FeatureConfig) -> np.ndarray:
    """Log mel energies of one file, (frames, n_mels) float32; ValueError for empty audio."""
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if audio.size == 0 or not np.any(audio):
        raise ValueError("empty or silent audio")
    if sr != feat.sample_rate:
        audio = librosa.resample(audio, orig_sr=sr, target_sr=feat.sample_rate)
    mel = librosa.feature.melspectrogram(
        y=audio, sr=feat.sample_rate, n_fft=feat.n_fft, hop_length=hop_samples(feat),
        win_length=int(round(feat.win_ms * feat.sample_rate / 1000)), n_mels=feat.n_mels,
        fmin=feat.fmin_hz, fmax=feat.fmax_hz or None, power=2.0)
    return np.log(mel + 1e-10).T.astype(np.float32)


def _one_thread_per_worker():
    """Pool initializer: workers already run in parallel; BLAS/OpenMP threads inside each of them
    oversubscribe the cores (several times slower on a 2-core machine)."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)


def _extract(job):
    """Worker: (filename, path, settings) -> (filename, features or None, reason)."""
    name, path, feat = job
    try:
        return name, log_mel(path, feat), ""
    except Exception as err:  # any unreadable file is skipped and listed, never fatal
        return name, None, f"{type(err).__name__}: {err}".replace("\n", " ")


def extract_split(name: str, audio_dir: Path, filenames: list[str], out_dir: Path, feat: FeatureConfig,
                  workers: int) -> tuple[list[str], int]:
    """Features for `filenames` into out_dir/<name>.h5 (only those missing); returns the clips that
    have features and how many were extracted now. Skipped clips go to out_dir/<name>_skipped.txt.

    No HDF5 file is ever written in place (a process killed while writing one leaves it unreadable):
    new features go to part files of SHARD_CLIPS clips, then are merged into <name>.h5, each file
    written under a temporary name and renamed when complete. A run after a kill (even -9) keeps
    the finished parts, removes the temporary files and extracts the rest."""
    win = int(round(feat.win_ms * feat.sample_rate / 1000))
    if win > feat.n_fft:
        raise ConfigError(f"features.win_ms={feat.win_ms:g} is {win} samples at {feat.sample_rate} Hz, more than "
                          f"features.n_fft={feat.n_fft}; raise n_fft or shorten the window")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}_wavs.txt").write_text("".join(f"{audio_dir / f}\n" for f in filenames))
    h5_path = out_dir / f"{name}.h5"
    settings = {k: str(v) for k, v in dataclasses.asdict(feat).items()}
    skipped = {}
    with open(out_dir / f".{name}.lock", "w") as lock:
        # One writer at a time (runs started together share this folder); a file system without
        # locks (Lustre mounted noflock) refuses, and then runs must not overlap.
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in out_dir.glob(f".{name}.*.tmp"):  # a killed run's unfinished file
            stale.unlink()
        held = set().union(*(_clips_in(path, settings) for path in [h5_path, *_parts(out_dir, name)]))
        jobs = []
        for f in filenames:
            if f in held:
                continue
            if not (audio_dir / f).is_file():
                skipped[f] = "file not found"
            else:
                jobs.append((f, str(audio_dir / f), feat))
        if jobs:  # librosa loads its feature modules lazily: once here, not once per worker
            import librosa.feature  # noqa: F401
        start = time.time()
        if workers > 1 and len(jobs) > 1:
            # Not "fork": forking a process that already runs threads (torch, tensorboard) can leave a
            # worker holding a copied lock forever. The fork server is clean and has this module loaded.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["sed.prepare"])
            with context.Pool(workers, initializer=_one_thread_per_worker) as pool:
                results = pool.imap_unordered(_extract, jobs, chunksize=4)
                extracted = _store(results, out_dir, name, settings, skipped, len(jobs))
        else:
            extracted = _store(map(_extract, jobs), out_dir, name, settings, skipped, len(jobs))
        seconds = time.time() - start
        parts = _parts(out_dir, name)
        if parts:
            _write_features(h5_path, settings, sources=[p for p in [h5_path, *parts] if p.is_file()])
            for part in parts:
                part.unlink()
        available = [f for f in filenames if f in _clips_in(h5_path, settings)]
    rate = f" ({len(jobs) / seconds:.1f} clips/s)" if jobs and seconds > 0 else ""
    (out_dir / f"{name}_skipped.txt").write_text("".join(f"{f}\t{why}\n" for f, why in sorted(skipped.items())))
    message = f"{name}: {len(filenames)} clips listed, {extracted} extracted now{rate}, {len(available)} with features"
    if skipped:
        message += f", {len(skipped)} skipped (listed in {out_dir / f'{name}_skipped.txt'})"
    print(message, flush=True)
    return available, extracted


def _parts(out_dir: Path, name: str) -> list[Path]:
    return sorted(out_dir.glob(f"{name}.part-*.h5"))


def _clips_in(path: Path, settings: dict) -> set[str]:
    """The clips a feature file holds (none when it is absent). A damaged file (written in place by
    an older version of this code and killed) is removed, so that its clips are extracted again."""
    if not path.is_file():
        return set()
    try:
        with h5py.File(path, "r") as h5:
            stored = {k: h5.attrs[k] for k in h5.attrs}
            clips = {clip for clip, _ in h5["mel"].items()}  # items() opens every clip's object header
    except (OSError, RuntimeError, KeyError) as err:
        print(f"{path} is damaged ({type(err).__name__}: {err}), probably by a killed extraction; "
              f"extracting its clips again", flush=True)
        path.unlink()
        return set()
    if stored != settings:
        raise ConfigError(f"{path} holds features made with other settings ({stored}); "
                          f"delete it or set data.features_dir to a new folder")
    return clips


def _write_features(path: Path, settings: dict, features: dict | None = None, sources: list[Path] = ()) -> None:
    """Write the feature file `path` whole: `features` ({clip: (frames, n_mels)}) and the clips of
    the feature files `sources`, under a temporary name that is renamed when complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as h5:
        h5.attrs.update(settings)
        group = h5.create_group("mel")
        for clip, mel in (features or {}).items():
            group.create_dataset(clip, data=mel)
        for source in sources:
            with h5py.File(source, "r") as held:
                for clip in held["mel"]:
                    if clip not in group:
                        held.copy(held["mel"][clip], group, clip)
    os.replace(tmp, path)


def _store(results, out_dir, name, settings, skipped, total) -> int:
    """Write finished features (HDF5 is written by this process only) as part files of SHARD_CLIPS
    clips; returns how many clips were extracted."""
    extracted, batch = 0, {}
    for clip, mel, reason in progress(results, total=total, desc=f"log-mel {name}"):
        if mel is None:
            skipped[clip] = reason
            continue
        batch[clip] = mel
        extracted += 1
        if len(batch) == SHARD_CLIPS:
            _write_features(out_dir / f"{name}.part-{time.time_ns()}.h5", settings, batch)
            batch = {}
    if batch:
        _write_features(out_dir / f"{name}.part-{time.time_ns()}.h5", settings, batch)
    return extracted


def prepare_data(cfg: Config) -> dict[str, Split]:
    """Every split the config names, prepared (idempotent). Keys: train, eval and (if set) test."""
    root = resolve_path(cfg.data.root)
    synth = cfg.data.synth
    if synth.enabled:
        from sed.synth import generate
        generate(root, synth.train_clips, synth.test_clips, synth.eval_clips, synth.sample_rate, synth.seed,
                 cfg.data.workers)
    if not root.is_dir():
        raise ConfigError(f"data.root {root} does not exist; download DCASE2018 Task 4 (see sed/README.md) "
                          f"or set data.root")
    out_dir = features_dir(cfg)
    splits = {}
    weak = read_weak_csv(root / cfg.data.weak_csv)
    names = list(weak)
    available, _ = extract_split("train", root / cfg.data.weak_audio, names, out_dir, cfg.features, cfg.data.workers)
    splits["train"] = Split("train", out_dir / "train.h5", available, weak, None)
    for name, csv, audio in (("test", cfg.data.test_csv, cfg.data.test_audio),
                             ("eval", cfg.data.eval_csv, cfg.data.eval_audio)):
        if not csv:
            continue
        strong = read_strong_csv(root / csv)
        available, _ = extract_split(name, root / audio, list(strong), out_dir, cfg.features, cfg.data.workers)
        clip_labels = {f: sorted({label for _, _, label in events}) for f, events in strong.items()}
        splits[name] = Split(name, out_dir / f"{name}.h5", available, clip_labels, strong)
    for split in splits.values():
        if not split.filenames:
            raise ConfigError(f"split {split.name}: no clip has features; check the audio folder and "
                              f"{out_dir / (split.name + '_skipped.txt')}")
    return splits


@cli_main
def main(argv=None):
    cfg, _ = parse_args(Config, argv, description="DCASE2018 Task 4 -> log-mel HDF5 features")
    prepare_data(cfg)
    print(f"features in {features_dir(cfg)}")


if __name__ == "__main__":
    main()
