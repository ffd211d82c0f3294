import urllib.error

import h5py
import numpy as np
import pytest
import soundfile
import torchvision
from PIL import Image

from av_scene import extract_features
from av_scene.data import DataConfig, load_splits
from common.config import ConfigError

CLIPS = {"fold1_train.csv": ["park-lyon-1001-0-a", "tram-milan-1002-10-a"],
         "fold1_evaluate.csv": ["park-lyon-2001-0-a", "bus-milan-2002-10-a"]}


def make_raw_dataset(root):
    """Two 2-s clips per fold: noise as audio, three 40x40 PNG frames per clip as video."""
    rng = np.random.default_rng(0)
    (root / "evaluation_setup").mkdir(parents=True)
    (root / "audio").mkdir()
    for csv_name, stems in CLIPS.items():
        lines = ["filename_audio\tfilename_video\tscene_label"]
        for stem in stems:
            soundfile.write(root / "audio" / f"{stem}.wav", 0.1 * rng.standard_normal(16000), 8000)
            frames = root / "video" / stem
            frames.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(frames / f"{i:03d}.png")
            lines.append(f"audio/{stem}.wav\tvideo/{stem}.mp4\t{stem.split('-')[0]}")
        (root / "evaluation_setup" / csv_name).write_text("\n".join(lines) + "\n")


def test_extraction_writes_the_course_layout(tmp_path):
    make_raw_dataset(tmp_path / "raw")
    out = tmp_path / "features"
    argv = [f"dataset_root={tmp_path / 'raw'}", f"out_root={out}", "pretrained=false", "sample_rate=8000",
            "hop_s=0.5", "n_mels=32", "image_size=32", "device=cpu"]
    extract_features.main(argv)
    extract_features.main(argv)  # a second run finds every clip done and skips it
    with h5py.File(out / "audio_features_data" / "train.hdf5") as f:
        assert f["4/audio/park-lyon-1001-0-a"].shape == (3, 512)  # windows at 0, 0.5, 1.0 s
    with h5py.File(out / "video_features_data" / "test.hdf5") as f:
        assert f["1/video/bus-milan-2002-10-a"].shape == (3, 512)  # one row per frame
    cfg = DataConfig(root=str(out), valid_csv="evaluation_setup/fold1_evaluate.csv", num_frames=4,
                     audio_h5=["audio_features_data/train.hdf5", "audio_features_data/test.hdf5"],
                     video_h5=["video_features_data/train.hdf5", "video_features_data/test.hdf5"])
    item = load_splits(cfg)["train"][0]
    assert item["audio"].shape == item["video"].shape == (4, 512)
    assert np.isfinite(item["audio"].numpy()).all()


def test_missing_pretrained_weights_name_the_file(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(ConfigError, match=r"resnet18-f37072fd\.pth .*download https://"):
        extract_features.build_backbone("resnet18", pretrained=True)
