"""Label files, the stratified split and feature preparation (corrupt, empty, missing audio)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from common.config import REPO_ROOT, ConfigError, load_config
from sed.config import CLASSES, Config
from sed.data import label_matrix, load_features, read_strong_csv, read_weak_csv, stratified_split
from sed.features import log_mel
from sed.prepare import ExtractionPool, extract_split, mel_settings, prepare_data


def test_weak_and_strong_csv_formats(tmp_path):
    weak = tmp_path / "weak.csv"
    weak.write_text("filename\tevent_labels\na.wav\tDog,Cat\nb.wav\tSpeech\n")
    assert read_weak_csv(weak) == {"a.wav": ["Cat", "Dog"], "b.wav": ["Speech"]}
    strong = tmp_path / "eval.csv"
    strong.write_text("filename\tonset\toffset\tevent_label\na.wav\t0.5\t1.25\tDog\nb.wav\t\t\t\nc.wav\n")
    assert read_strong_csv(strong) == {"a.wav": [(0.5, 1.25, "Dog")], "b.wav": [], "c.wav": []}


@pytest.mark.parametrize("kind,text,expected", [
    ("weak", "filename\tevent_labels\na.wav Dog\n", "weak.csv:2: expected 'filename<TAB>label,label'"),
    ("weak", "a.wav\tDog,Horse\n", "weak.csv:1: unknown event label 'Horse'"),
    ("strong", "a.wav\t1.0\tlate\tDog\n", "strong.csv:1: expected 'filename<TAB>onset<TAB>offset<TAB>event_label'"),
    ("strong", "a.wav\t2.0\t1.0\tDog\n", "strong.csv:1: offset 1.0 is not after onset 2.0"),
])
def test_malformed_label_lines_are_one_line_errors(tmp_path, kind, text, expected):
    path = tmp_path / f"{kind}.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        (read_weak_csv if kind == "weak" else read_strong_csv)(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_missing_label_file_is_a_config_error(tmp_path):
    cfg = load_config(Config, None, [f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match="weak label file not found"):
        prepare_data(cfg)


def test_stratified_split_keeps_every_class_in_both_parts():
    rng = np.random.default_rng(0)
    labels = [list(rng.choice(CLASSES, size=rng.integers(1, 4), replace=False)) for _ in range(200)]
    targets = label_matrix(labels)
    train_idx, valid_idx = stratified_split(targets, 0.2, seed=0)
    assert sorted(np.concatenate([train_idx, valid_idx]).tolist()) == list(range(200))
    assert abs(len(valid_idx) - 40) <= 3
    share = targets[valid_idx].sum(0) / targets.sum(0)
    assert np.all(np.abs(share - 0.2) < 0.06), share
    again = stratified_split(targets, 0.2, seed=0)
    assert np.array_equal(again[1], valid_idx)


def librosa_log_mel(path, feat):
    """The extraction before sed/features.py (librosa.feature.melspectrogram), the reference."""
    import librosa
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = librosa.resample(audio.mean(axis=1), orig_sr=sr, target_sr=feat.sample_rate)
    mel = librosa.feature.melspectrogram(
        y=audio, sr=feat.sample_rate, n_fft=feat.n_fft, hop_length=round(feat.hop_ms * feat.sample_rate / 1000),
        win_length=round(feat.win_ms * feat.sample_rate / 1000), n_mels=feat.n_mels, fmin=feat.fmin_hz,
        fmax=feat.fmax_hz or None, power=2.0)
    return np.log(mel + 1e-10).T.astype(np.float32)


@pytest.mark.parametrize("overrides", [
    [],                                                           # course settings, 44.1 kHz
    ["features.sample_rate=16000", "features.n_fft=1024", "features.win_ms=25", "features.hop_ms=10",
     "features.fmin_hz=50", "features.fmax_hz=7000"],             # resampled, window < n_fft, band limits
])
def test_log_mel_equals_librosa_melspectrogram_within_tolerance(tmp_path, overrides):
    """Tolerance on log mel energies (float32 rounding): 1e-3 (0.1 % in power) in bands within 80 dB of their
    frame's loudest band, 0.02 (2 %) below; measured at most 1.6e-4 and 9.6e-3 (bands 80+ dB below a tone)."""
    feat = load_config(Config, None, overrides).features
    sr = 44100
    t = np.arange(3 * sr) / sr
    noise = np.random.default_rng(0).standard_normal(len(t))
    clips = {"tone_then_silence": np.where(t < 1.5, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0),
             "noise": 0.1 * noise,
             "quiet_tone": 1e-4 * np.sin(2 * np.pi * 440 * t) + 1e-6 * noise,
             "stereo": np.stack([0.3 * np.sin(2 * np.pi * 3000 * t), 0.05 * noise], axis=1)}
    mel = mel_settings(feat)
    for name, audio in clips.items():
        path = tmp_path / f"{name}.wav"
        sf.write(path, audio.astype(np.float32), sr, subtype="FLOAT")
        ours, reference = log_mel(path, mel), librosa_log_mel(path, feat)
        assert ours.dtype == np.float32 and ours.shape == reference.shape, name
        within_80_db = reference > reference.max(axis=1, keepdims=True) - 8 * np.log(10)
        assert np.abs(ours - reference)[within_80_db].max() < 1e-3, name
        assert np.abs(ours - reference).max() < 0.02, name


MAIN_WITH_TORCH = """
import multiprocessing, sys
import torch  # what the main module of `python -m sed.train` has loaded
from common.config import load_config
from sed.config import Config
from sed.prepare import ExtractionPool

if __name__ == "__main__":
    feat = load_config(Config, None, ["features.sample_rate=16000", "features.n_fft=1024"]).features
    with ExtractionPool(feat, workers=2) as pool:
        extracted = [mel is not None for _, mel, _ in pool.map([(path, path) for path in sys.argv[1:]])]
        maps = [open(f"/proc/{child.pid}/maps").read() for child in multiprocessing.active_children()]
    print(sum(extracted), len(maps), sum("libtorch" in m or "scipy/signal" in m for m in maps))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the workers' memory maps in /proc")
def test_extraction_workers_load_neither_torch_nor_librosa(tiny_root, tmp_path):
    """The workers of a main module that imported torch (python -m sed.train) load sed.features only:
    torch or librosa (scipy.signal) there cost seconds per worker."""
    script = tmp_path / "main_with_torch.py"
    script.write_text(MAIN_WITH_TORCH)
    paths = [str(p) for p in sorted((tiny_root / "audio" / "train" / "weak").iterdir())[:4]]
    run = subprocess.run([sys.executable, str(script), *paths], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["4", "2", "0"]  # 4 clips extracted, 2 workers, none with torch or scipy.signal


def test_prepare_skips_lists_and_counts_bad_audio_and_is_idempotent(tiny_root, tmp_path):
    audio_dir = tiny_root / "audio" / "train" / "weak"
    good = sorted(p.name for p in audio_dir.iterdir())[:4]
    bad_dir = tmp_path / "audio"
    bad_dir.mkdir()
    for name in good:
        (bad_dir / name).write_bytes((audio_dir / name).read_bytes())
    (bad_dir / "corrupt.wav").write_bytes(b"RIFF\x00\x00junk that is not a wav file")
    sf.write(bad_dir / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    names = good + ["corrupt.wav", "empty.wav", "missing.wav"]
    feat = load_config(Config, None, ["features.sample_rate=16000", "features.n_fft=512"]).features
    out = tmp_path / "features"
    with pytest.raises(ConfigError, match="features.win_ms=40 is 640 samples at 16000 Hz, more than"):
        extract_split("train", bad_dir, names, out, ExtractionPool(feat, workers=2))
    feat.n_fft = 1024
    assert ExtractionPool(feat, workers=64).workers == len(os.sched_getaffinity(0))
    with ExtractionPool(feat, workers=2) as pool:
        available, extracted = extract_split("train", bad_dir, names, out, pool)
    assert available == good and extracted == 4
    skipped = dict(line.split("\t") for line in (out / "train_skipped.txt").read_text().splitlines())
    assert sorted(skipped) == ["corrupt.wav", "empty.wav", "missing.wav"]
    assert skipped["missing.wav"] == "file not found" and "empty" in skipped["empty.wav"]
    assert len((out / "train_wavs.txt").read_text().splitlines()) == 7
    with ExtractionPool(feat, workers=2) as pool:
        available, extracted = extract_split("train", bad_dir, names, out, pool)
    assert available == good and extracted == 0          # nothing extracted twice
    features, lengths = load_features(out / "train.h5", good, n_frames=600)
    assert features.shape == (4, 600, 64) and np.all(lengths == 1 + 160000 // 320)
    mel = mel_settings(feat)
    assert all(np.array_equal(f[:n], log_mel(bad_dir / name, mel)) for f, n, name in zip(features, lengths, good))
    assert np.all(features[:, lengths[0]:] == features[:, lengths[0]:lengths[0] + 1])  # padded with a constant


KILLED_EXTRACTION = """
import os, signal, sys
from pathlib import Path
import h5py
from common.config import load_config
from sed import prepare
from sed.config import Config

audio_dir, out_dir, clips, method, kill_at = sys.argv[1:6]
audio_dir, out_dir, clips, kill_at = Path(audio_dir), Path(out_dir), int(clips), int(kill_at)
prepare.SHARD_CLIPS = 4
write, calls = getattr(h5py.Group, method), []

def write_then_die(*args, **kwargs):  # SIGKILL in the middle of writing an HDF5 file
    result = write(*args, **kwargs)
    calls.append(1)
    if len(calls) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(h5py.Group, method, write_then_die)
feat = load_config(Config, None, sys.argv[6:]).features
prepare.extract_split("train", audio_dir, sorted(p.name for p in audio_dir.iterdir())[:clips], out_dir,
                      prepare.ExtractionPool(feat, workers=1))
"""


@pytest.mark.parametrize("method, kill_at, kept", [
    ("create_dataset", 6, 4),   # while writing the second part of 4 clips: the first is kept
    ("copy", 2, 10),            # while merging the finished parts into train.h5
])
def test_feature_cache_survives_kill_9_during_extraction(tiny_root, tmp_path, method, kill_at, kept):
    audio_dir = tiny_root / "audio" / "train" / "weak"
    names = sorted(p.name for p in audio_dir.iterdir())[:10]
    overrides = ["features.sample_rate=16000", "features.n_fft=1024", "features.hop_ms=80"]
    feat = load_config(Config, None, overrides).features
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", KILLED_EXTRACTION, str(audio_dir), str(out), str(len(names)),
                             method, str(kill_at), *overrides], cwd=REPO_ROOT, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert list(out.glob(".*.tmp")) and not (out / "train.h5").exists()  # killed while writing a file
    available, extracted = extract_split("train", audio_dir, names, out, ExtractionPool(feat, workers=1))
    assert available == names and extracted == len(names) - kept
    assert not list(out.glob("*.tmp")) and not list(out.glob("*part*"))  # cleaned up
    extract_split("train", audio_dir, names, tmp_path / "clean", ExtractionPool(feat, workers=1))
    resumed = load_features(out / "train.h5", names, n_frames=130)
    clean = load_features(tmp_path / "clean" / "train.h5", names, n_frames=130)
    assert all(np.array_equal(a, b) for a, b in zip(resumed, clean))


def test_feature_cache_damaged_by_an_older_version_is_extracted_again(tiny_root, tmp_path, capsys):
    audio_dir = tiny_root / "audio" / "train" / "weak"
    names = sorted(p.name for p in audio_dir.iterdir())[:3]
    feat = load_config(Config, None, ["features.sample_rate=16000", "features.n_fft=1024",
                                      "features.hop_ms=80"]).features
    out = tmp_path / "features"
    extract_split("train", audio_dir, names, out, ExtractionPool(feat, workers=1))
    data = (out / "train.h5").read_bytes()
    (out / "train.h5").write_bytes(data[:len(data) // 2])  # what a kill -9 of the in-place writer left
    available, extracted = extract_split("train", audio_dir, names, out, ExtractionPool(feat, workers=1))
    assert available == names and extracted == 3
    assert f"{out / 'train.h5'} is damaged" in capsys.readouterr().out


POOL_STARTED_BY_TRAIN = """
import multiprocessing, signal, sys
from common.config import load_config
from common.preemption import PreemptionFlag
from sed.config import Config
from sed.prepare import ExtractionPool

if __name__ == "__main__":
    flag = PreemptionFlag()  # sed.train creates it before preparing the data: SIGTERM blocked
    if sys.argv[1] == "finished":
        flag.finish()  # a training that ended in this process before (a notebook, the test suite)
    feat = load_config(Config, None, ["features.sample_rate=16000", "features.n_fft=1024"]).features
    for _ in range(3):
        with ExtractionPool(feat, workers=2) as pool:
            done = sum(mel is not None for _, mel, _ in pool.map([(path, path) for path in sys.argv[2:]]))
            states = []
            for worker in multiprocessing.active_children():
                fields = dict(line.split(":\\t", 1) for line in open(f"/proc/{worker.pid}/status") if ":\\t" in line)
                states.append(bool((int(fields["SigBlk"], 16) | int(fields["SigIgn"], 16))
                                   & (1 << (signal.SIGTERM - 1))))
        print(done, states)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the workers' signal masks in /proc")
def test_extraction_pool_under_the_preemption_flag_ends(tiny_root, tmp_path):
    """Workers inherit an ignored or blocked SIGTERM from the process that starts them; a pool whose workers
    SIGTERM cannot end hung in Pool.terminate (in CI, in test_prepare_skips_lists... above, after an
    in-process training of an earlier test). The workers take SIGTERM back and the pool ends."""
    script = tmp_path / "pool_started_by_train.py"
    script.write_text(POOL_STARTED_BY_TRAIN)
    paths = [str(p) for p in sorted((tiny_root / "audio" / "train" / "weak").iterdir())[:4]]
    for phase in ("training", "finished"):
        run = subprocess.run([sys.executable, str(script), phase, *paths], cwd=REPO_ROOT, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines() == ["4 [False, False]"] * 3, phase


FAST = ["features.sample_rate=16000", "features.n_fft=1024", "features.hop_ms=80", "data.workers=1"]


def test_course_layout_is_read_without_overrides(tiny_root, tmp_path, capsys, course_copy):
    root = course_copy(tiny_root, tmp_path, ["index,display_name"] + [f"{i},{c}" for i, c in enumerate(CLASSES)])
    splits = prepare_data(load_config(Config, None, [f"data.root={root}", *FAST]))
    assert sorted(splits) == ["eval", "train"]
    assert "data layout: course (label/train/weak.csv, label/eval/eval.csv; no test split" in capsys.readouterr().out
    assert len(splits["train"].filenames) == 24 and len(splits["eval"].filenames) == 6


@pytest.mark.parametrize("class_lines, message", [
    ([f"{i}\t{c}" for i, c in enumerate(CLASSES[:-1])], "missing: Vacuum_cleaner"),
    ([f"{c} {i}" for i, c in enumerate(CLASSES)] + ["10 Guitar"], "not ours: Guitar"),
    ([f"{i}\t{c}" for i, c in enumerate(CLASSES)] + ["Guitar"],
     "class_label_indices.txt:11: expected '<index> <class name>'"),
])
def test_course_class_list_must_name_the_ten_classes(tiny_root, tmp_path, class_lines, message, course_copy):
    root = course_copy(tiny_root, tmp_path, class_lines)
    with pytest.raises(ConfigError, match=message):
        prepare_data(load_config(Config, None, [f"data.root={root}", *FAST]))


def test_upsampled_audio_is_noted_once_per_split(tiny_root, tmp_path, capsys):
    feat = load_config(Config, None, ["features.sample_rate=22050", "features.n_fft=1024"]).features
    names = sorted(p.name for p in (tiny_root / "audio" / "train" / "weak").iterdir())[:2]
    extract_split("train", tiny_root / "audio" / "train" / "weak", names, tmp_path, ExtractionPool(feat, workers=1))
    printed = capsys.readouterr().out
    assert printed.count("note: train audio is 16000 Hz") == 1 and "bands above 8000 Hz stay empty" in printed
