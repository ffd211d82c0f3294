"""Label files, the stratified split and feature preparation (corrupt, empty, missing audio)."""
import numpy as np
import pytest
import soundfile as sf

from common.config import ConfigError, load_config
from sed.config import CLASSES, Config
from sed.data import label_matrix, load_features, read_strong_csv, read_weak_csv, stratified_split
from sed.prepare import extract_split, prepare_data


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
        extract_split("train", bad_dir, names, out, feat, workers=2)
    feat.n_fft = 1024
    available, extracted = extract_split("train", bad_dir, names, out, feat, workers=2)
    assert available == good and extracted == 4
    skipped = dict(line.split("\t") for line in (out / "train_skipped.txt").read_text().splitlines())
    assert sorted(skipped) == ["corrupt.wav", "empty.wav", "missing.wav"]
    assert skipped["missing.wav"] == "file not found" and "empty" in skipped["empty.wav"]
    assert len((out / "train_wavs.txt").read_text().splitlines()) == 7
    available, extracted = extract_split("train", bad_dir, names, out, feat, workers=2)
    assert available == good and extracted == 0          # nothing extracted twice
    features, lengths = load_features(out / "train.h5", good, n_frames=600)
    assert features.shape == (4, 600, 64) and np.all(lengths == 1 + 160000 // 320)
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
prepare.extract_split("train", audio_dir, sorted(p.name for p in audio_dir.iterdir())[:clips], out_dir, feat, workers=1)
"""


@pytest.mark.parametrize("method, kill_at, kept", [
    ("create_dataset", 6, 4),   # while writing the second part of 4 clips: the first is kept
    ("copy", 2, 10),            # while merging the finished parts into train.h5
])
def test_feature_cache_survives_kill_9_during_extraction(tiny_root, tmp_path, method, kill_at, kept):
    import subprocess
    import sys

    from common.config import REPO_ROOT
    audio_dir = tiny_root / "audio" / "train" / "weak"
    names = sorted(p.name for p in audio_dir.iterdir())[:10]
    overrides = ["features.sample_rate=16000", "features.n_fft=1024", "features.hop_ms=80"]
    feat = load_config(Config, None, overrides).features
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", KILLED_EXTRACTION, str(audio_dir), str(out), str(len(names)),
                             method, str(kill_at), *overrides], cwd=REPO_ROOT, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert list(out.glob(".*.tmp")) and not (out / "train.h5").exists()  # killed while writing a file
    available, extracted = extract_split("train", audio_dir, names, out, feat, workers=1)
    assert available == names and extracted == len(names) - kept
    assert not list(out.glob("*.tmp")) and not list(out.glob("*part*"))  # cleaned up
    extract_split("train", audio_dir, names, tmp_path / "clean", feat, workers=1)
    resumed = load_features(out / "train.h5", names, n_frames=130)
    clean = load_features(tmp_path / "clean" / "train.h5", names, n_frames=130)
    assert all(np.array_equal(a, b) for a, b in zip(resumed, clean))


def test_feature_cache_damaged_by_an_older_version_is_extracted_again(tiny_root, tmp_path, capsys):
    audio_dir = tiny_root / "audio" / "train" / "weak"
    names = sorted(p.name for p in audio_dir.iterdir())[:3]
    feat = load_config(Config, None, ["features.sample_rate=16000", "features.n_fft=1024",
                                      "features.hop_ms=80"]).features
    out = tmp_path / "features"
    extract_split("train", audio_dir, names, out, feat, workers=1)
    data = (out / "train.h5").read_bytes()
    (out / "train.h5").write_bytes(data[:len(data) // 2])  # what a kill -9 of the in-place writer left
    available, extracted = extract_split("train", audio_dir, names, out, feat, workers=1)
    assert available == names and extracted == 3
    assert f"{out / 'train.h5'} is damaged" in capsys.readouterr().out
