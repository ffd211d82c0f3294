"""Model zoo: shapes, state carrying, Transformer causality, tying, weight drop."""
import pytest
import torch

from common.config import REPO_ROOT, load_config
from lm.config import Config, ModelConfig
from lm.models import ARCHITECTURES, TransformerLM, build_model, detach_state

VOCAB = 23


def tiny(arch: str, **overrides) -> torch.nn.Module:
    cfg = ModelConfig(arch=arch, emb_dim=16, hidden=24, layers=2, heads=2, ff_dim=32, context_size=3,
                      max_len=64, **overrides)
    torch.manual_seed(0)
    return build_model(cfg, VOCAB)


MODELS = [(a, {}) for a in ARCHITECTURES if a != "transformer"] + \
    [("transformer", {"positions": p}) for p in ("sinusoidal", "learned", "rotary")]


@pytest.mark.parametrize("arch,extra", MODELS)
def test_forward_backward_shapes_and_state(arch, extra):
    model = tiny(arch, **extra)
    tokens = torch.randint(0, VOCAB, (3, 7))
    logits, state = model(tokens)
    assert logits.shape == (3, 7, VOCAB)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    logits2, _ = model(tokens, detach_state(state))  # a carried state is accepted
    assert logits2.shape == (3, 7, VOCAB)


@pytest.mark.parametrize("arch,extra", [m for m in MODELS if m[0] != "transformer"] +
                         [("transformer", {"positions": "rotary", "memory_len": 40})])
def test_chunked_equals_whole_sequence(arch, extra):
    """Carrying the state over chunks gives the same predictions as reading the sequence at once
    (for the Transformer: while the memory holds everything read so far)."""
    model = tiny(arch, **extra).eval()
    tokens = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        whole, _ = model(tokens)
        first, state = model(tokens[:, :5])
        second, _ = model(tokens[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", ["sinusoidal", "learned", "rotary"])
def test_transformer_is_causal(positions):
    model = tiny("transformer", positions=positions).eval()
    tokens = torch.randint(0, VOCAB, (2, 10))
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % VOCAB
    with torch.no_grad():
        before, _ = model(tokens)
        after, _ = model(changed)
    torch.testing.assert_close(before[:, :6], after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_transformer_window_longer_than_learned_table_is_a_config_error():
    from common.config import ConfigError
    model = tiny("transformer", positions="learned").eval()
    with pytest.raises(ConfigError, match="model.max_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_weight_tying_shares_the_embedding(arch):
    model = tiny(arch)
    assert model.decoder.weight is model.embedding.weight
    untied = tiny(arch, tie_weights=False)
    assert untied.decoder.weight is not untied.embedding.weight


def test_weight_drop_and_dropout_act_in_training_only():
    model = tiny("lstm", weight_drop=0.5, dropout=0.0, dropout_input=0.0, dropout_hidden=0.0,
                 dropout_emb=0.0)
    tokens = torch.randint(0, VOCAB, (2, 6))
    model.train()
    a, _ = model(tokens)
    b, _ = model(tokens)
    assert not torch.allclose(a, b)  # a new DropConnect mask on weight_hh per forward
    model.eval()
    c, _ = model(tokens)
    d, _ = model(tokens)
    torch.testing.assert_close(c, d)
    # the raw recurrent weights are untouched and still receive gradients through the mask
    model.train()
    model(tokens)[0].sum().backward()
    assert model.rnns[0].weight_hh_l0.grad is not None


def test_transformer_memory_keeps_last_tokens():
    model = TransformerLM(VOCAB, emb_dim=16, layers=1, heads=2, ff_dim=32, memory_len=4)
    _, state = model(torch.arange(10).view(1, 10) % VOCAB)
    assert state.tolist() == [[6, 7, 8, 9]]


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO_ROOT / "lm" / "configs").glob("*.yaml")))
def test_parameter_counts_in_config_headers_match_the_models(config):
    """A header's "N parameters with the V-word vocabulary" (and "M with PTB's 10,000") is what the code builds."""
    import re
    path = REPO_ROOT / "lm" / "configs" / config
    header = " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))
    claims = [(count, millions, vocab) for count, millions, vocab in
              re.findall(r"([\d][\d,.]*)(M?) parameters with the ([\d,]+)-word", header)]
    claims += [(count, millions, "10,000")
               for count, millions in re.findall(r"([\d][\d,.]*)(M?) with PTB's 10,000", header)]
    if config != "demo.yaml":  # the demo's vocabulary comes from its generated corpus
        assert claims, f"{config} states no parameter count"
    model_cfg = load_config(Config, str(path), []).model
    for count, millions, vocab in claims:
        built = sum(p.numel() for p in build_model(model_cfg, int(vocab.replace(",", ""))).parameters())
        if millions:
            assert f"{built / 1e6:.1f}" == count, (config, vocab, built)
        else:
            assert built == int(count.replace(",", "")), (config, vocab, built)
