"""Batched synthesis: B utterances of different text and prompt lengths decoded at once (padding, per-row
positions, rows that finish early leave the batch) give exactly what one-at-a-time decoding gives."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from valle_tts.models.valle import ARModel, ModelConfig, NARModel

CFG = ModelConfig(d_model=32, num_layers=2, num_heads=2, dropout=0.0, codebook_size=16, num_codebooks=4)
# (text tokens, prompt frames) of each utterance: all different, one text of a single token, one empty prompt
LENGTHS = [(3, 0), (7, 5), (1, 9), (5, 2)]


def _utterances(lengths=LENGTHS, seed=1):
    g = torch.Generator().manual_seed(seed)
    return ([torch.randint(2, 10, (t,), generator=g) for t, _ in lengths],
            [torch.randint(0, CFG.codebook_size, (p,), generator=g) for _, p in lengths])


def _ar(text_causal=False):
    torch.manual_seed(0)
    ar = ARModel(ModelConfig(**{**CFG.__dict__, "text_causal": text_causal}), 10).eval()
    with torch.no_grad():
        ar.head.bias[ar.eos] = 0.6  # the end token wins in some contexts only: rows stop at different steps
    return ar


def _ar_one_at_a_time(ar, text, prompt, max_new):
    """Greedy decoding of one unpadded utterance, recomputing the whole sequence each step (no cache)."""
    audio = torch.cat([torch.tensor([ar.bos]), prompt])
    for _ in range(max_new):
        token = int(ar(text[None], torch.tensor([len(text)]), audio[None], torch.tensor([len(audio)]))[0, -1].argmax())
        if token == ar.eos:
            return audio[len(prompt) + 1:], True
        audio = torch.cat([audio, torch.tensor([token])])
    return audio[len(prompt) + 1:], False


@pytest.mark.parametrize("text_causal", [False, True])
def test_batched_greedy_ar_equals_one_at_a_time(text_causal):
    ar = _ar(text_causal)
    texts, prompts = _utterances()
    max_new = [20, 11, 20, 15]
    expected = [_ar_one_at_a_time(ar, t, p, m) for t, p, m in zip(texts, prompts, max_new)]
    for (codes, stopped), text, prompt, m in zip(expected, texts, prompts, max_new):
        single = ar.generate(text, prompt, m, top_k=1)
        assert single[0].tolist() == codes.tolist() and single[1] == stopped
    # the case this test is about: some rows stop on the end token early, others run to their limit
    assert any(stopped and len(codes) < m for (codes, stopped), m in zip(expected, max_new))
    assert any(not stopped and len(codes) == m for (codes, stopped), m in zip(expected, max_new))
    assert len({len(codes) for codes, _ in expected}) >= 3
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):  # the result of a row does not depend on its neighbours
        batched = ar.generate_batch([texts[i] for i in order], [prompts[i] for i in order],
                                    [max_new[i] for i in order], top_k=1)
        for i, (codes, stopped) in zip(order, batched):
            assert codes.tolist() == expected[i][0].tolist() and stopped == expected[i][1]


def test_batched_ar_one_limit_for_all_and_argument_errors():
    ar = _ar()
    texts, prompts = _utterances()
    batched = ar.generate_batch(texts, prompts, 6, temperature=0.0)
    assert [(c.tolist(), s) for c, s in batched] == \
        [(c.tolist(), s) for c, s in (ar.generate(t, p, 6, temperature=0.0) for t, p in zip(texts, prompts))]
    with pytest.raises(ValueError, match="2 texts, 1 prompts and 2 limits"):
        ar.generate_batch(texts[:2], prompts[:1], 6)
    with pytest.raises(ValueError, match="at least one text token and max_new >= 1"):
        ar.generate_batch([texts[0], torch.zeros(0, dtype=torch.long)], prompts[:2], 6)
    with pytest.raises(ValueError, match="at least one text token and max_new >= 1"):
        ar.generate_batch(texts[:2], prompts[:2], [6, 0])


def _nar_one_at_a_time(nar, text, prompt_codes, codes1):
    """Greedy stages of one unpadded utterance, straight from the model's forward."""
    P, N = len(prompt_codes), len(codes1)
    codes = torch.cat([prompt_codes, F.pad(codes1[:, None], (0, CFG.num_codebooks - 1))])[None]
    for stage in range(1, CFG.num_codebooks):
        logits = nar(text[None], torch.tensor([len(text)]), codes, torch.tensor([P + N]), torch.tensor([P]), stage)
        codes[0, P:, stage] = logits[0, P:].argmax(-1)
    return codes[0, P:]


@pytest.mark.parametrize("nar_stage", ["adaln", "add"])
def test_batched_nar_equals_one_at_a_time(nar_stage):
    torch.manual_seed(0)
    nar = NARModel(ModelConfig(**{**CFG.__dict__, "nar_stage": nar_stage}), 10).eval()
    texts, prompts = _utterances()
    g = torch.Generator().manual_seed(2)
    prompt_codes = [torch.cat([p[:, None], torch.randint(0, CFG.codebook_size, (len(p), CFG.num_codebooks - 1),
                                                        generator=g)], dim=1) for p in prompts]
    codes1 = [torch.randint(0, CFG.codebook_size, (n,), generator=g) for n in (6, 1, 11, 3)]
    expected = [_nar_one_at_a_time(nar, t, p, c) for t, p, c in zip(texts, prompt_codes, codes1)]
    assert len({tuple(e[:, 1:].flatten().tolist()) for e in expected}) == 4  # the stages predict, not a constant
    batched = nar.generate_batch(texts, prompt_codes, codes1)
    for e, b, text, prompt, c in zip(expected, batched, texts, prompt_codes, codes1):
        assert torch.equal(b, e) and torch.equal(nar.generate(text, prompt, c), e)


def test_batched_decoding_under_bf16_autocast():
    ar, texts, prompts = _ar(), *_utterances()
    torch.manual_seed(0)
    nar = NARModel(CFG, 10).eval()
    prompt_codes = [p[:, None].repeat(1, CFG.num_codebooks) for p in prompts]
    generator = torch.Generator().manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        decoded = ar.generate_batch(texts, prompts, [9, 4, 9, 9], top_k=5, top_p=0.9, ras_window=3,
                                    generator=generator)
        codes = nar.generate_batch(texts, prompt_codes, [c for c, _ in decoded])
    for (codes1, stopped), limit, full in zip(decoded, [9, 4, 9, 9], codes):
        assert len(codes1) == limit or stopped
        assert full.shape == (len(codes1), CFG.num_codebooks) and torch.equal(full[:, 0], codes1)
        assert ((full >= 0) & (full < CFG.codebook_size)).all()
