"""Both caption decoders (attention LSTM, Transformer), with the small CNN and a torchvision encoder
(random weights), under CPU autocast: the code path of bf16 (Ampere+) and fp16 (V100) autocast on a
GPU. The loss of captioning/train.py `caption_loss` must be fp32 and finite, every gradient finite
fp32; the Transformer's causal mask must hold and padded captions must not disturb the others."""
import pytest
import torch

from captioning.models.captioner import DecoderConfig, build_model
from captioning.models.encoder import EncoderConfig
from captioning.train import caption_loss

VOCAB, PAD = 20, 0
DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])


def tiny_captioner(kind: str, encoder: str = "small_cnn", finetune: str = "none"):
    torch.manual_seed(0)
    return build_model(EncoderConfig(name=encoder, pretrained=False, finetune=finetune, grid_size=2, channels=8),
                       DecoderConfig(kind=kind, embed_dim=16, hidden_dim=16, attention_dim=16, dropout=0.1,
                                     layers=2, heads=2, ff_dim=32, max_len=16), VOCAB)


def padded_captions() -> torch.Tensor:
    """<start>=1 w.. <end>=2 then padding, three lengths: (3, 8)."""
    generator = torch.Generator().manual_seed(0)
    captions = torch.full((3, 8), PAD)
    for row, length in enumerate((8, 5, 3)):
        captions[row, :length] = torch.randint(3, VOCAB, (length,), generator=generator)
        captions[row, 0], captions[row, length - 1] = 1, 2
    return captions


# Teacher forcing 0.5 (scheduled sampling): the Transformer first predicts under no_grad, inside autocast.
CASES = [("attention_lstm", "small_cnn", "none", 1.0), ("attention_lstm", "small_cnn", "none", 0.5),
         ("transformer", "small_cnn", "none", 1.0), ("transformer", "small_cnn", "none", 0.5),
         ("attention_lstm", "resnet18", "last", 1.0), ("transformer", "resnet18", "none", 1.0)]


@DTYPES
@pytest.mark.parametrize("kind,encoder,finetune,teacher_forcing_prob", CASES,
                         ids=[f"{k}-{e}-finetune_{f}-tf{p}" for k, e, f, p in CASES])
def test_loss_and_gradients_under_autocast(kind, encoder, finetune, teacher_forcing_prob, dtype,
                                           check_fp32_finite_gradients):
    model = tiny_captioner(kind, encoder, finetune).train()
    images = torch.randn(3, 3, 32, 32)
    captions = padded_captions()
    with torch.autocast("cpu", dtype=dtype):
        logits, alphas = model(images, captions[:, :-1], teacher_forcing_prob, "sample")
    assert logits.dtype == dtype  # autocast reached the output layer
    assert torch.isfinite(logits).all() and torch.isfinite(alphas).all()
    loss, cross_entropy, attention_term = caption_loss(logits, captions[:, 1:], alphas, PAD, alpha_c=1.0)
    for value in (loss, cross_entropy, attention_term):
        assert value.dtype == torch.float32
        assert torch.isfinite(value)
    loss.backward()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert any(name.startswith("encoder.") for name, _ in trainable) == (encoder == "small_cnn" or finetune != "none")
    check_fp32_finite_gradients(trainable)


@DTYPES
def test_transformer_masks_under_autocast(dtype):
    """Each caption alone and inside the padded batch give the same logits (to half precision), and
    no position reads a later word."""
    model = tiny_captioner("transformer").eval()
    features = torch.randn(3, 4, 8)  # cached-features path: (B, grid*grid, channels)
    inputs = padded_captions()[:, :-1]
    changed = inputs.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % VOCAB
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        together, _ = model(features, inputs, features_given=True)
        after_change, _ = model(features, changed, features_given=True)
        assert torch.isfinite(together).all()  # padded positions included
        for row, length in enumerate((7, 4, 2)):
            alone, _ = model(features[row:row + 1], inputs[row:row + 1, :length], features_given=True)
            torch.testing.assert_close(together[row, :length].float(), alone[0].float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(together[:, :4], after_change[:, :4])
    assert not torch.allclose(together[:, 4:], after_change[:, 4:])
