"""Both SED models (CRNN, CDur) with every clip pooling under CPU autocast, the code path of bf16
(Ampere+) and fp16 (V100) autocast on a GPU: the model hands out fp32 probabilities strictly inside
(0, 1), so sed/train.py's binary cross-entropy on them is fp32 and finite; every gradient finite fp32."""
import pytest
import torch
import torch.nn.functional as F

from sed.config import ModelConfig
from sed.models import build_model
from sed.train import weak_label_loss

N_MELS, N_CLASSES = 16, 3
CASES = [(name, pooling, time_pool) for name in ("crnn", "cdur") for pooling in ("linear_softmax", "attention")
         for time_pool in ([1, 1], [2, 1])] + \
    [("crnn", "max", [2, 1]), ("crnn", "mean", [2, 1]), ("cdur", "max", [1, 1]), ("cdur", "mean", [1, 1])]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name,pooling,time_pool", CASES, ids=[f"{n}-{p}-tp{t[0]}" for n, p, t in CASES])
def test_loss_and_gradients_under_autocast(name, pooling, time_pool, dtype, check_fp32_finite_gradients):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, conv_channels=[4, 4], freq_pool=[4, 4], time_pool=time_pool,
                                    rnn_hidden=8, pooling=pooling), N_MELS, N_CLASSES).train()
    frame_logits = []
    model.classifier.register_forward_hook(lambda module, inputs, output: frame_logits.append(output))
    mels = torch.randn(3, 20, N_MELS)
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with torch.autocast("cpu", dtype=dtype):
        frame_probs, clip_probs = model(mels)
    assert frame_logits[0].dtype == dtype  # autocast reached the classifier
    for probs in (frame_probs, clip_probs):
        assert probs.dtype == torch.float32  # what train.py's BCE reads: probabilities 1 - 1e-7 exist only in fp32
        assert torch.all((probs > 0) & (probs < 1))
    loss = weak_label_loss(clip_probs, targets)  # sed/train.py, outside autocast
    assert loss.item() == pytest.approx(F.binary_cross_entropy(clip_probs, targets).item(), rel=1e-5)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    check_fp32_finite_gradients(model.named_parameters())
