import h5py
import numpy as np
import pytest

from av_scene.data import (
    SCENE_CLASSES,
    Clip,
    DataConfig,
    EmbeddingStore,
    crop_or_pad,
    load_splits,
    location_of,
    read_fold_csv,
    split_by_location,
)
from common.config import ConfigError


def test_loader_reads_the_course_layout(small_root, h5_files):
    cfg = DataConfig(root=str(small_root), num_frames=8, valid_fraction=0.25, **h5_files)
    splits = load_splits(cfg, seed=0)
    train, test = splits["train"], splits["test"]
    assert len(train) + len(splits["valid"]) == 10 * 4 * 3 and len(test) == 10 * 2 * 3
    item = train[0]
    assert item["audio"].shape == (8, 16) and item["video"].shape == (8, 16)
    # Labels come from the CSV and agree with the class index in the HDF5 key.
    with h5py.File(small_root / "audio_features_data" / "test.hdf5") as f:
        for clip in test.clips[:5]:
            assert f"{clip.label}/audio/{clip.stem}" in f
    # The global mean/std file normalises the training frames to about zero mean, unit variance.
    frames = np.concatenate([train[i]["audio"].numpy()[:6] for i in range(len(train))])
    assert abs(frames.mean()) < 0.1 and abs(frames.std() - 1) < 0.1


def test_the_validation_locations_do_not_depend_on_the_run_seed(small_root, h5_files):
    cfg = DataConfig(root=str(small_root), num_frames=8, valid_fraction=0.25, **h5_files)
    stems = {seed: [c.stem for c in load_splits(cfg, seed=seed)["valid"].clips] for seed in (0, 5)}
    assert stems[0] == stems[5]
    other = DataConfig(root=str(small_root), num_frames=8, valid_fraction=0.25, split_seed=3, **h5_files)
    assert [c.stem for c in load_splits(other, seed=0)["valid"].clips] != stems[0]


def test_key_layouts_are_interchangeable(tmp_path):
    stem = "park-lyon-1001-40000-a"
    frames = np.arange(12, dtype=np.float32).reshape(3, 4)
    with h5py.File(tmp_path / "per_frame.hdf5", "w") as f:  # the DCASE baseline: one dataset per frame
        for i, row in enumerate(frames):
            f[f"4/audio/{stem}/{i}"] = row
        f[f"4/video/{stem}"] = -frames  # the other modality in the same file is ignored
    with h5py.File(tmp_path / "flat.hdf5", "w") as f:
        f[stem] = frames
    for name in ("per_frame.hdf5", "flat.hdf5"):
        store = EmbeddingStore([tmp_path / name], "audio")
        np.testing.assert_array_equal(store.load(stem), frames)
        store.close()


def test_crop_and_pad():
    frames = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_array_equal(crop_or_pad(frames, 3, offset=1), frames[1:4])
    padded = crop_or_pad(frames, 7)
    np.testing.assert_array_equal(padded[:5], frames)
    assert (padded[5:] == 0).all()


def test_random_crop_depends_on_seed_epoch_index_only(small_root, h5_files):
    cfg = DataConfig(root=str(small_root), num_frames=4, valid_fraction=0.25, **h5_files)
    train = load_splits(cfg, seed=3)["train"]
    epoch0 = [train[i]["audio"] for i in range(10)]
    train[17]  # reading other clips in between changes nothing
    assert all(np.array_equal(train[i]["audio"], epoch0[i]) for i in range(10))
    train.set_epoch(1)
    assert any(not np.array_equal(train[i]["audio"], epoch0[i]) for i in range(10))  # new offsets
    train.set_epoch(0)
    assert all(np.array_equal(train[i]["audio"], epoch0[i]) for i in range(10))


def test_location_split_has_no_leakage(small_root):
    clips = read_fold_csv(small_root / "evaluation_setup" / "fold1_train.csv")
    train, valid = split_by_location(clips, 0.25, seed=0)
    assert {c.location for c in train}.isdisjoint({c.location for c in valid})
    assert len(train) + len(valid) == len(clips)
    for label in range(len(SCENE_CLASSES)):  # every class keeps training and validation clips
        assert any(c.label == label for c in train) and any(c.label == label for c in valid)
    assert 0.15 < len(valid) / len(clips) < 0.35


def test_location_of_parses_the_filename():
    assert location_of("street_traffic-lisbon-1000-40000-a") == "lisbon-1000"
    with pytest.raises(ConfigError, match="does not look like"):
        location_of("clip7")


def test_split_keeps_a_location_with_two_classes_together():
    clips = [Clip(f"bus-lyon-1-{i}-a", 1, "lyon-1") for i in range(3)] + [Clip("tram-lyon-1-9-a", 9, "lyon-1")]
    clips += [Clip(f"bus-lyon-{k}-0-a", 1, f"lyon-{k}") for k in range(2, 6)]
    train, valid = split_by_location(clips, 0.3, seed=0)
    assert {c.location for c in train}.isdisjoint({c.location for c in valid})


def test_csv_mistakes_are_one_line_errors(tmp_path):
    path = tmp_path / "fold.csv"
    path.write_text("filename_audio\tfilename_video\tscene_label\naudio/a-b-1-2.wav\tvideo/a-b-1-2.mp4\tbeach\n")
    with pytest.raises(ConfigError, match=r"line 2: unknown scene label 'beach'"):
        read_fold_csv(path)
    path.write_text("audio\tvideo\tlabel\n")
    with pytest.raises(ConfigError, match="header"):
        read_fold_csv(path)
    with pytest.raises(ConfigError, match="fold file not found"):
        read_fold_csv(tmp_path / "missing.csv")


def test_missing_embedding_is_reported(small_root, h5_files):
    cfg = DataConfig(root=str(small_root), audio_h5=["audio_features_data/train.hdf5"],
                     video_h5=h5_files["video_h5"], num_frames=8)
    with pytest.raises(ConfigError, match="test clips have no audio embedding"):
        load_splits(cfg)


@pytest.mark.parametrize("damage, reason", [
    (lambda data: data[:len(data) // 2], "truncated file"),                     # an interrupted copy
    (lambda data: b"<html>502 Bad Gateway</html>", "file signature not found"),  # a failed download
    (lambda data: data[:800] + b"\xff" * 2200 + data[3000:], "Object visitation failed"),  # overwritten
], ids=["truncated", "not-hdf5", "overwritten"])
def test_damaged_hdf5_is_one_line_naming_the_file_and_the_fix(small_root, h5_files, tmp_path, damage, reason):
    import shutil
    root = shutil.copytree(small_root, tmp_path / "data")
    path = root / "video_features_data" / "test.hdf5"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ConfigError) as info:
        load_splits(DataConfig(root=str(root), num_frames=8, valid_fraction=0.25, **h5_files))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: not a readable HDF5 file (") and reason in message
    assert "download it again" in message and "python -m av_scene.extract_features" in message


def test_damaged_clip_in_hdf5_names_the_file_and_the_clip(tmp_path):
    stem = "park-lyon-1001-40000-a"
    path = tmp_path / "audio.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset(stem, data=np.random.default_rng(0).random((50, 8)), chunks=(50, 8), compression="gzip")
        offset = f[stem].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 64] = b"\xff" * 64  # the compressed frames of the clip
    path.write_bytes(bytes(data))
    store = EmbeddingStore([path], "audio")
    with pytest.raises(ConfigError) as info:
        store.load(stem)
    store.close()
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read clip {stem} (") and "\n" not in message
    assert "the file is damaged: copy or download it again" in message
