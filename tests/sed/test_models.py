"""Pooling functions against hand-computed values; model output shapes at the input frame rate."""
import pytest
import torch

from common.config import load_config
from sed.config import Config
from sed.models import build_model
from sed.models.pooling import ClipPooling


def test_pooling_functions_hand_values():
    frame_probs = torch.tensor([[[0.2], [0.6], [0.2]]])        # (batch 1, time 3, class 1)
    hidden = torch.zeros(1, 3, 4)
    expect = {"max": 0.6, "mean": 1.0 / 3, "linear_softmax": (0.04 + 0.36 + 0.04) / 1.0}
    for kind, value in expect.items():
        assert ClipPooling(kind, 4, 1)(frame_probs, hidden).item() == pytest.approx(value)
    attention = ClipPooling("attention", 4, 1)
    # equal attention scores (zero hidden states) -> the mean
    assert attention(frame_probs, hidden).item() == pytest.approx(1.0 / 3)
    with torch.no_grad():
        attention.attention.weight.fill_(0.0)
        attention.attention.bias.fill_(0.0)
        attention.attention.weight[0, 0] = 1.0
    hidden[0, 1, 0] = 100.0                                     # all attention on frame 1
    assert attention(frame_probs, hidden).item() == pytest.approx(0.6)


@pytest.mark.parametrize("name,time_pool", [("crnn", [1, 1, 1]), ("crnn", [2, 2, 1]), ("cdur", [2, 2, 1])])
@pytest.mark.parametrize("pooling", ["linear_softmax", "attention", "max", "mean"])
def test_models_give_frame_probs_at_the_input_rate(name, time_pool, pooling):
    cfg = load_config(Config, None, [f"model.name={name}", f"model.time_pool={time_pool}", f"model.pooling={pooling}",
                                     "model.conv_channels=[4,4,4]", "model.rnn_hidden=8"])
    model = build_model(cfg.model, 64, 10).eval()
    frame_probs, clip_probs = model(torch.randn(3, 101, 64))
    assert frame_probs.shape == (3, 101, 10) and clip_probs.shape == (3, 10)
    assert torch.all((frame_probs > 0) & (frame_probs < 1)) and torch.all((clip_probs > 0) & (clip_probs < 1))
    if pooling == "max":
        assert torch.allclose(clip_probs, frame_probs.amax(1))
