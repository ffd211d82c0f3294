"""Every audio-visual scene model (unimodal, early, intermediate, late, gated fusion; mean and
attention pooling) under CPU autocast, the code path of bf16 (Ampere+) and fp16 (V100) autocast on a
GPU: the loss of av_scene/train.py `training_loss` is fp32 and finite, every gradient finite fp32."""
import pytest
import torch

from av_scene.models import ModelConfig, build_model
from av_scene.train import soft_targets, training_loss

NUM_CLASSES, AUDIO_DIM, VIDEO_DIM = 4, 6, 5
CASES = [(name, pooling) for name in ("audio", "video", "early", "late") for pooling in ("mean", "attention")] + \
    [("intermediate", "mean"), ("gated", "mean")]  # these two have their own pooling


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name,pooling", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_loss_and_gradients_under_autocast(name, pooling, dtype, check_fp32_finite_gradients):
    cfg = ModelConfig(name=name, hidden=16, embed=8, pooling=pooling, aux_weight=0.3)
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES, AUDIO_DIM, VIDEO_DIM).train()
    audio, video = torch.randn(4, 5, AUDIO_DIM), torch.randn(4, 5, VIDEO_DIM)
    targets = soft_targets(torch.tensor([0, 1, 2, 3]), NUM_CLASSES, smoothing=0.1)
    with torch.autocast("cpu", dtype=dtype):
        outputs = model(audio, video)
    for key in ("logits", "audio_logits", "video_logits"):
        if key in outputs:
            assert torch.isfinite(outputs[key]).all(), key
    branch_logits = outputs["audio_logits"] if name == "late" else outputs["logits"]
    assert branch_logits.dtype == dtype  # autocast reached the classifier
    loss = training_loss(outputs, targets, model.fused_loss, cfg.aux_weight)  # as train.py, outside autocast
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    check_fp32_finite_gradients(model.named_parameters())
