import numpy as np
import pytest
import torch

from av_scene.models import MODEL_NAMES, ModelConfig, build_model
from av_scene.models.late_fusion import LateFusion, StackingFusion, average_probs, fit_audio_weight, weighted_probs
from common.config import ConfigError


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_every_model_maps_clips_to_class_logits(name, pooling):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, hidden=32, embed=16, pooling=pooling), 10, 24, 20).eval()
    audio, video = torch.randn(3, 7, 24), torch.randn(3, 7, 20)
    outputs = model(audio, video)
    assert outputs["logits"].shape == (3, 10)
    if name in ("late", "gated"):
        assert outputs["audio_logits"].shape == outputs["video_logits"].shape == (3, 10)
    if name == "audio":  # a unimodal model ignores the other modality
        assert torch.equal(model(audio, torch.zeros_like(video))["logits"], outputs["logits"])


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="model.name must be one of"):
        build_model(ModelConfig(name="transformer"), 10, 8, 8)


def test_late_fusion_logits_are_the_log_of_the_average_probability():
    model = LateFusion(8, 8, 5, hidden=16, embed=8).eval()
    out = model(torch.randn(4, 3, 8), torch.randn(4, 3, 8))
    expected = 0.5 * (out["audio_logits"].softmax(-1) + out["video_logits"].softmax(-1))
    torch.testing.assert_close(out["logits"].exp(), expected)


def test_late_fusion_arithmetic():
    audio = np.array([[0.8, 0.2], [0.4, 0.6]])
    video = np.array([[0.2, 0.8], [0.0, 1.0]])
    np.testing.assert_allclose(average_probs(audio, video), [[0.5, 0.5], [0.2, 0.8]])
    np.testing.assert_allclose(weighted_probs(audio, video, 0.75), [[0.65, 0.35], [0.3, 0.7]])
    # Audio is always right and video always wrong: the fitted weight trusts audio fully.
    labels = np.array([0, 1])
    right, wrong = np.array([[0.9, 0.1], [0.1, 0.9]]), np.array([[0.1, 0.9], [0.9, 0.1]])
    assert fit_audio_weight(right, wrong, labels) == 1.0
    assert fit_audio_weight(wrong, right, labels) == 0.0


def test_stacking_learns_which_modality_to_follow_and_keeps_unseen_classes_possible():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)  # class 3 never occurs in the held-out set the stacker is fitted on
    informative = np.eye(4)[labels] * 0.7 + 0.075
    noise = rng.dirichlet(np.ones(4), 300)
    stacker = StackingFusion(4).fit(noise, informative, labels)
    probs = stacker.predict_probs(noise, informative)
    assert probs.shape == (300, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    np.testing.assert_allclose(probs[:, 3], average_probs(noise, informative)[:, 3])  # not 0: 34.5 nats a clip
    assert (probs.argmax(1) == labels).mean() > 0.95


def test_cross_fitted_validation_predictions_are_held_out():
    """The weighted and stacking rules are fitted on validation; their validation numbers come from
    cross-fitting, so a row's prediction does not depend on that row's own label."""
    from av_scene.evaluate import cross_fitted
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 60)
    audio, video = rng.dirichlet(np.ones(3), 60), rng.dirichlet(np.ones(3), 60)
    stacked = lambda a, v, y, a_new, v_new: StackingFusion(3).fit(a, v, y).predict_probs(a_new, v_new)
    before = cross_fitted(stacked, audio, video, labels)
    flipped = labels.copy()
    flipped[7] = (labels[7] + 1) % 3
    after = cross_fitted(stacked, audio, video, flipped)
    np.testing.assert_allclose(after[7], before[7])  # row 7 was predicted by a fit without it
    assert not np.allclose(after, before)  # the other folds did see the changed label
