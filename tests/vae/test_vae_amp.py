"""Both VAE architectures (MLP, conv) and every activation under CPU autocast, the code path of
bf16 (Ampere+) and fp16 (V100) autocast on a GPU: the loss of vae/loss.py `training_loss` (BCE and
KL) is fp32 and finite, and every gradient finite fp32."""
import pytest
import torch

from vae.loss import training_loss
from vae.models import ModelConfig, build_model

IMAGE_SHAPE = (1, 28, 28)
CASES = [("mlp", "relu", 0), ("mlp", "elu", 0), ("mlp", "gelu", 0), ("mlp", "silu", 0),
         ("conv", "relu", 0), ("conv", "silu", 1)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("free_bits", [0.0, 0.5], ids=["kl", "free_bits"])
@pytest.mark.parametrize("arch,activation,convs_per_stage", CASES, ids=[f"{a}-{f}-convs{c}" for a, f, c in CASES])
def test_loss_and_gradients_under_autocast(arch, activation, convs_per_stage, free_bits, dtype,
                                           check_fp32_finite_gradients):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, latent_dim=3, activation=activation, hidden=[32, 16],
                                    channels=[4, 8], convs_per_stage=convs_per_stage, fc_hidden=16),
                        IMAGE_SHAPE).train()
    images = torch.bernoulli(torch.rand(4, *IMAGE_SHAPE))  # train.py's dynamic binarisation
    with torch.autocast("cpu", dtype=dtype):
        logits, mu, logvar = model(images)
    assert logits.dtype == mu.dtype == logvar.dtype == dtype  # autocast reached encoder and decoder
    assert torch.isfinite(logits).all() and torch.isfinite(mu).all() and torch.isfinite(logvar).all()
    loss, bce, kl = training_loss(logits, images, mu, logvar, weight=1.0, free_bits=free_bits)  # as train.py
    for value in (loss, bce, kl):
        assert value.dtype == torch.float32  # 784 pixels of BCE summed in half precision lose the small terms
        assert torch.isfinite(value).all()
    loss.backward()
    check_fp32_finite_gradients(model.named_parameters())
