"""A small synthetic set in the course layout (16-d embeddings, few clips) shared by the tests."""
import pytest

from av_scene.synthetic import make_synthetic_dataset

SMALL = {"dim": 16, "train_locations_per_class": 4, "test_locations_per_class": 2, "clips_per_location": 3,
         "min_frames": 6, "max_frames": 10}
H5 = {"audio_h5": ["audio_features_data/train.hdf5", "audio_features_data/test.hdf5"],
      "video_h5": ["video_features_data/train.hdf5", "video_features_data/test.hdf5"]}


@pytest.fixture(scope="session")
def small_root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("av_scene") / "data", seed=1, **SMALL)


@pytest.fixture
def h5_files() -> dict:
    """data.audio_h5 / data.video_h5 for the small set (it has no val.hdf5)."""
    return {key: list(value) for key, value in H5.items()}
