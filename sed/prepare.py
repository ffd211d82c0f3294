"""Data preparation: DCASE2018 Task 4 folder -> wav lists + 64-band log-mel features in HDF5.

    python -m sed.prepare --config sed/configs/baseline.yaml [key=value ...]

Stage by stage, each skipped when its output is there (train.py runs the same function):
  1. (demo/tests) generate the synthetic set when data.synth.enabled and it is missing;
  2. per split (train = weak.csv, test and eval = strong csv, one split per data.unlabelled_audio
     folder, named after it, holding every .wav in it): write <split>_wavs.txt, then extract
     the log-mels that <split>.h5 does not hold yet, in `data.workers` processes (at most one per
     core this process may use), one pool for all splits. Audio that is missing, unreadable or empty
     is skipped, counted and listed in <split>_skipped.txt.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import h5py

from common.config import ConfigError, cli_main, parse_args, resolve_path
from common.log import progress
from sed.config import Config, DataConfig, FeatureConfig
from sed.data import check_class_list, hop_samples, read_strong_csv, read_weak_csv

if TYPE_CHECKING:  # imported where used: importing scipy.fft took 0.36 s, which train.py need not wait for
    from sed.features import MelSettings

SHARD_CLIPS = 256  # clips per part file: the most a kill during extraction can lose


@dataclasses.dataclass
class Split:
    """One prepared split: the clips that have features, with their labels."""
    name: str
    h5_path: Path
    filenames: list[str]
    weak: dict[str, list[str]]                                # clip labels (derived for strong splits; none
                                                              # for unlabelled ones)
    strong: dict[str, list[tuple[float, float, str]]] | None  # events, for test and eval


def features_dir(cfg: Config) -> Path:
    if cfg.data.features_dir:
        return resolve_path(cfg.data.features_dir)
    f = cfg.features
    tag = f"mel{f.n_mels}_sr{f.sample_rate}_fft{f.n_fft}_win{f.win_ms:g}ms_hop{f.hop_ms:g}ms"
    if f.fmin_hz or f.fmax_hz:
        tag += f"_fmin{f.fmin_hz:g}_fmax{f.fmax_hz:g}"
    return resolve_path(cfg.data.root) / "features" / tag


def win_samples(feat: FeatureConfig) -> int:
    return int(round(feat.win_ms * feat.sample_rate / 1000))


def mel_settings(feat: FeatureConfig) -> MelSettings:
    """The sed.features.MelSettings of `feat`, with librosa's mel filterbank."""
    import librosa.filters

    from sed.features import MelSettings
    basis = librosa.filters.mel(sr=feat.sample_rate, n_fft=feat.n_fft, n_mels=feat.n_mels, fmin=feat.fmin_hz,
                                fmax=feat.fmax_hz or None)
    return MelSettings(feat.sample_rate, feat.n_fft, hop_samples(feat), win_samples(feat), basis)


def available_cores() -> int:
    """The cores this process may run on (a Slurm job's or taskset's share, not the whole machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _main_module_hidden():
    """multiprocessing runs the parent's __main__ module again in every new fork-server worker: for
    `python -m sed.train` that is torch, librosa and the models, seconds per worker, for a worker that
    needs sed.features only. Without __spec__ and __file__ it leaves __main__ alone."""
    main = sys.modules["__main__"]
    spec, path = getattr(main, "__spec__", None), main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = spec
        if path is not None:
            main.__file__ = path


class ExtractionPool:
    """Log-mel extraction in `workers` processes, at most one per available core (more only add start-up
    and contention). The pool starts at the first split that has clips to extract and serves every
    split; with one worker (or one clip) this process extracts. Use as a context manager."""

    def __init__(self, feat: FeatureConfig, workers: int):
        self.feat = feat
        self.workers = min(workers, available_cores())
        self._mel = None
        self._pool = None

    def map(self, jobs: list[tuple[str, str]]):
        """(clip name, path) pairs -> an iterator of (clip name, features or None, why not), in any order."""
        from sed import features
        if self._mel is None:
            self._mel = mel_settings(self.feat)
        if self.workers == 1 or len(jobs) == 1:
            return (features.extract(name, path, self._mel) for name, path in jobs)
        if self._pool is None:
            # Not "fork": forking a process that already runs threads (torch, tensorboard) can leave a
            # worker holding a copied lock forever. The fork server loads the light worker module only
            # (not torch, not librosa), and its workers inherit it.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["sed.features"])
            with _main_module_hidden():
                self._pool = context.Pool(self.workers, initializer=features.init_worker, initargs=(self._mel,))
        return self._pool.imap_unordered(features.extract_in_worker, jobs, chunksize=4)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()


def extract_split(name: str, audio_dir: Path, filenames: list[str], out_dir: Path,
                  pool: ExtractionPool) -> tuple[list[str], int]:
    """Features for `filenames` into out_dir/<name>.h5 (only those missing); returns the clips that
    have features and how many were extracted now. Skipped clips go to out_dir/<name>_skipped.txt.

    No HDF5 file is ever written in place (a process killed while writing one leaves it unreadable):
    new features go to part files of SHARD_CLIPS clips, then are merged into <name>.h5, each file
    written under a temporary name and renamed when complete. A run after a kill (even -9) keeps
    the finished parts, removes the temporary files and extracts the rest."""
    feat = pool.feat
    win = win_samples(feat)
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
                jobs.append((f, str(audio_dir / f)))
        if jobs:
            _note_upsampling(name, jobs[0][1], feat)
        start = time.time()
        extracted = _store(pool.map(jobs) if jobs else [], out_dir, name, settings, skipped, len(jobs))
        seconds = time.time() - start
        parts = _parts(out_dir, name)
        if len(parts) == 1 and not h5_path.exists():
            os.replace(parts[0], h5_path)  # a complete feature file already: no copy
        elif parts:
            _write_features(h5_path, settings, sources=[p for p in [h5_path, *parts] if p.is_file()])
            for part in parts:
                part.unlink()
        held = _clips_in(h5_path, settings)  # once: it reads every clip's header
        available = [f for f in filenames if f in held]
    rate = f" ({len(jobs) / seconds:.1f} clips/s)" if jobs and seconds > 0 else ""
    (out_dir / f"{name}_skipped.txt").write_text("".join(f"{f}\t{why}\n" for f, why in sorted(skipped.items())))
    message = f"{name}: {len(filenames)} clips listed, {extracted} extracted now{rate}, {len(available)} with features"
    if skipped:
        message += f", {len(skipped)} skipped (listed in {out_dir / f'{name}_skipped.txt'})"
    print(message, flush=True)
    return available, extracted


def _note_upsampling(split: str, path: str, feat: FeatureConfig) -> None:
    """Audio below features.sample_rate is upsampled, and the mel bands above its Nyquist frequency
    stay empty: say so once per split (from its first clip), with the setting that matches."""
    import soundfile as sf
    try:
        rate = sf.info(path).samplerate
    except RuntimeError:
        return  # unreadable: extraction skips and lists it
    if rate < feat.sample_rate:
        print(f"note: {split} audio is {rate} Hz ({Path(path).name}), below features.sample_rate={feat.sample_rate}: "
              f"it is upsampled and the mel bands above {rate // 2} Hz stay empty; features.sample_rate={rate} "
              f"(with a matching features.n_fft) uses the audio as it is")


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


def synth_data(cfg: Config) -> Path:
    """data.root, with the synthetic set generated into it when data.synth.enabled and it is missing."""
    root = resolve_path(cfg.data.root)
    synth = cfg.data.synth
    if synth.enabled:
        from sed.synth import generate
        generate(root, synth.train_clips, synth.test_clips, synth.eval_clips, synth.sample_rate, synth.seed,
                 cfg.data.workers, synth.unlabelled_clips)
    return root


COURSE_LABELS = {"weak_csv": "label/train/weak.csv", "test_csv": "", "eval_csv": "label/eval/eval.csv"}
COURSE_CLASS_LIST = "label/class_label_indices.txt"


def label_files(data: DataConfig, root: Path) -> dict[str, str]:
    """weak_csv, test_csv ("" = no test split) and eval_csv for data.layout (see DataConfig)."""
    layout = data.layout
    if layout == "auto":
        layout = "course" if (root / "label").is_dir() and not (root / "metadata").is_dir() else "dcase"
    files = {key: getattr(data, key) for key in COURSE_LABELS}
    if layout == "course":
        if not (root / COURSE_CLASS_LIST).is_file():
            raise ConfigError(f"{root / COURSE_CLASS_LIST} not found: the course layout has it next to "
                              f"label/train/weak.csv (or set data.layout=dcase)")
        check_class_list(root / COURSE_CLASS_LIST)
        defaults = DataConfig()
        files = {key: path if path != getattr(defaults, key) else COURSE_LABELS[key] for key, path in files.items()}
        print(f"data layout: course ({', '.join(p for p in files.values() if p)}"
              f"{'' if files['test_csv'] else '; no test split: the configured post-processing is used'})")
    return files


def unlabelled_folders(cfg: Config, root: Path) -> dict[str, tuple[Path, list[str]]]:
    """{split name: (folder, its .wav files)} for data.unlabelled_audio; the split is named after the folder."""
    folders = {}
    for folder in cfg.data.unlabelled_audio:
        path = root / folder
        if not path.is_dir():
            raise ConfigError(f"data.unlabelled_audio: folder {path} does not exist")
        if path.name in folders or path.name in ("train", "test", "eval"):
            raise ConfigError(f"data.unlabelled_audio: two splits would be named {path.name!r} (a split is named "
                              f"after its folder); rename or drop one")
        wavs = sorted(p.name for p in path.glob("*.wav"))
        if not wavs:
            raise ConfigError(f"data.unlabelled_audio: folder {path} holds no .wav files")
        folders[path.name] = (path, wavs)
    return folders


def prepare_data(cfg: Config) -> dict[str, Split]:
    """Every split the config names, prepared (idempotent). Keys: train, eval, (if set) test, and one per
    data.unlabelled_audio folder (named after it)."""
    root = synth_data(cfg)
    if not root.is_dir():
        raise ConfigError(f"data.root {root} does not exist; download DCASE2018 Task 4 (see sed/README.md) "
                          f"or set data.root")
    out_dir = features_dir(cfg)
    splits = {}
    labels = label_files(cfg.data, root)
    weak = read_weak_csv(root / labels["weak_csv"])
    unlabelled = unlabelled_folders(cfg, root)
    with ExtractionPool(cfg.features, cfg.data.workers) as pool:
        available, _ = extract_split("train", root / cfg.data.weak_audio, list(weak), out_dir, pool)
        splits["train"] = Split("train", out_dir / "train.h5", available, weak, None)
        for name, csv, audio in (("test", labels["test_csv"], cfg.data.test_audio),
                                 ("eval", labels["eval_csv"], cfg.data.eval_audio)):
            if not csv:
                continue
            strong = read_strong_csv(root / csv)
            available, _ = extract_split(name, root / audio, list(strong), out_dir, pool)
            clip_labels = {f: sorted({label for _, _, label in events}) for f, events in strong.items()}
            splits[name] = Split(name, out_dir / f"{name}.h5", available, clip_labels, strong)
        for name, (folder, wavs) in unlabelled.items():
            available, _ = extract_split(name, folder, wavs, out_dir, pool)
            splits[name] = Split(name, out_dir / f"{name}.h5", available, {}, None)
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
