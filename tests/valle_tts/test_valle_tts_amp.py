"""VALL-E's AR and NAR models under CPU autocast, the code path of bf16 (Ampere+) and fp16 (V100)
autocast on a GPU, on a padded batch: the losses of valle_tts/train.py `compute_losses`, run inside
autocast as train.py runs them, must be fp32 and finite, every gradient finite fp32, and the padded
keys of the boolean attention masks must neither give NaN nor change the unpadded utterances."""
import pytest
import torch

from valle_tts.data import collate
from valle_tts.models.valle import VALLE, ModelConfig
from valle_tts.train import compute_losses

NUM_TEXT_TOKENS = 12
CPU = torch.device("cpu")
DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
VARIANTS = pytest.mark.parametrize("variant", [{}, {"text_causal": True, "nar_stage": "add"}],
                                   ids=["paper", "text_causal-nar_add"])


def tiny_valle(**overrides) -> VALLE:
    cfg = ModelConfig(d_model=32, num_layers=2, num_heads=2, ff_mult=2, codebook_size=16, num_codebooks=3,
                      **overrides)
    torch.manual_seed(0)
    return VALLE(cfg, NUM_TEXT_TOKENS)


def padded_batch(seed: int = 0) -> dict:
    """Three utterances of different text and audio lengths, padded as the data loader pads them."""
    generator = torch.Generator().manual_seed(seed)
    texts = [torch.randint(2, NUM_TEXT_TOKENS, (n,), generator=generator) for n in (6, 3, 2)]
    codes = [torch.randint(0, 16, (n, 3), generator=generator) for n in (9, 5, 3)]
    return collate(texts, codes)


def record_outputs(model: VALLE) -> list:
    """Forward hooks on the AR and NAR output layers: their logits, appended per forward pass."""
    logits = []
    for head in [model.ar.head, *model.nar.heads]:
        head.register_forward_hook(lambda module, inputs, output: logits.append(output.detach()))
    return logits


@VARIANTS
@DTYPES
def test_losses_and_gradients_under_autocast(variant, dtype, check_fp32_finite_gradients):
    model = tiny_valle(**variant).train()
    logits = record_outputs(model)
    batch = padded_batch()
    prompt_lens = torch.tensor([3, 2, 1])
    losses = []
    with torch.autocast("cpu", dtype=dtype):  # as train.py: the losses are computed inside autocast
        for stage, which in ((1, "both"), (2, "nar")):  # every NAR stage, so every head gets a gradient
            losses += [loss for loss, _, _ in compute_losses(model, batch, stage, prompt_lens, which, CPU).values()]
    assert len(logits) == len(losses) == 3
    for output in logits:
        assert output.dtype == dtype  # autocast reached the output layers
        assert torch.isfinite(output).all()  # padded positions included
    for loss in losses:
        assert loss.dtype == torch.float32
        assert torch.isfinite(loss)
    sum(losses).backward()
    check_fp32_finite_gradients(model.named_parameters())


@VARIANTS
@DTYPES
def test_padding_changes_nothing_under_autocast(variant, dtype):
    """Each utterance alone and inside the padded batch give the same logits (to half precision):
    the masked keys get zero weight, not a large negative score that overflows or leaks."""
    model = tiny_valle(**variant).eval()
    batch = padded_batch()
    prompt_lens = torch.tensor([3, 2, 1])
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        together = model(batch["text"], batch["text_lens"], batch["codes"], batch["audio_lens"], prompt_lens, 1)
        for i in range(3):
            text_len, audio_len = int(batch["text_lens"][i]), int(batch["audio_lens"][i])
            alone = model(batch["text"][i:i + 1, :text_len], batch["text_lens"][i:i + 1],
                          batch["codes"][i:i + 1, :audio_len], batch["audio_lens"][i:i + 1], prompt_lens[i:i + 1], 1)
            for which, frames in (("ar", audio_len + 1), ("nar", audio_len)):
                padded_logits = together[which][0][i]
                assert torch.isfinite(padded_logits).all()
                torch.testing.assert_close(padded_logits[:frames].float(), alone[which][0][0].float(),
                                           atol=3e-2, rtol=3e-2)
