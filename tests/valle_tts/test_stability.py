"""Stability devices and metrics: the loop detector and the expected length on constructed codes,
stop-token boosting and the expected-length cap changing decoding as intended (random weights),
and the per-row stability columns of the evaluation summary."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from valle_tts.config import SynthConfig
from valle_tts.models.valle import VALLE, ARModel, ModelConfig
from valle_tts.scoring import summarise
from valle_tts.stability import expected_new_frames, frames_per_token, has_loop, new_frame_limit
from valle_tts.text import TokenTable

CFG = ModelConfig(d_model=32, num_layers=1, num_heads=2, dropout=0.0, codebook_size=16, num_codebooks=2)


def test_loop_is_a_long_stretch_of_one_repeated_ngram():
    g = torch.Generator().manual_seed(0)
    speech = torch.randint(0, 1024, (60,), generator=g)
    loop = torch.tensor([5, 9, 13] * 10)                                   # 30 frames of one trigram
    assert has_loop(torch.cat([speech[:20], loop, speech[20:]]), max_period=4, min_frames=30)
    assert not has_loop(torch.cat([speech[:20], loop, speech[20:]]), max_period=2, min_frames=30)  # period 3
    assert not has_loop(torch.cat([speech[:20], loop[:29], speech[20:]]), max_period=4, min_frames=30)  # too short
    assert has_loop(torch.full((30,), 7), max_period=1, min_frames=30)     # one token held (period 1)
    assert not has_loop(speech, max_period=10, min_frames=8)
    assert not has_loop(torch.zeros(0, dtype=torch.long), max_period=4, min_frames=1)


def test_expected_length_and_the_length_cap():
    # 3 frames per token, 10 text tokens, a 12-frame prompt: 30 frames in all, 18 of them new
    assert expected_new_frames(3.0, 10, 12) == 18.0
    assert expected_new_frames(3.0, 2, 12) == 1.0  # a prompt longer than the text's share: still one frame
    scfg = SynthConfig(max_frames_per_token=12.0)
    assert new_frame_limit(scfg, 10, 12, 18.0) == 108          # the fixed cap: 12 x 10 tokens - prompt
    assert new_frame_limit(dataclasses.replace(scfg, max_length_ratio=2.0), 10, 12, 18.0) == 36
    assert new_frame_limit(dataclasses.replace(scfg, max_length_ratio=20.0), 10, 12, 18.0) == 108  # the smaller


def test_frames_per_token_of_the_training_cuts(prepared):
    from common.config import load_config
    from valle_tts.config import Config
    from valle_tts.data import load_cuts
    root, config = prepared
    cfg = load_config(Config, config)
    tokens = TokenTable.load(root / "manifests" / "tokens.txt")
    cuts = load_cuts(root / "manifests", cfg.data.train_parts)
    frames = sum(len(c.load_codes()) for c in cuts)
    token_count = sum(len(tokens.encode(c.supervisions[0].text)) for c in cuts)
    assert frames_per_token(cuts, tokens) == pytest.approx(frames / token_count)


def _never_stopping_ar():
    torch.manual_seed(0)
    ar = ARModel(CFG, 10).eval()
    with torch.no_grad():
        ar.head.bias[ar.eos] = -30.0  # the end token never wins on its own
    return ar


def test_stop_token_boost_ends_rows_just_after_their_expected_length():
    ar = _never_stopping_ar()
    texts, prompts = [torch.tensor([2, 3, 4]), torch.tensor([5, 6])], [torch.tensor([1, 2]), torch.tensor([3])]
    plain = ar.generate_batch(texts, prompts, 30, temperature=0.0)
    assert [(len(c), s) for c, s in plain] == [(30, False), (30, False)]
    boosted = ar.generate_batch(texts, prompts, 30, temperature=0.0, expected_new=[5.0, 8.0], eos_boost=1000.0)
    # no boost up to the expected length; one frame past it the bias (1000 x 1/5, 1000 x 1/8) wins
    assert [(len(c), s) for c, s in boosted] == [(6, True), (9, True)]
    for (codes, _), (same, _) in zip(boosted, plain):  # the frames before the stop are unchanged
        assert codes.tolist() == same[:len(codes)].tolist()
    gentle = ar.generate_batch(texts, prompts, 30, temperature=0.0, expected_new=[5.0, 8.0], eos_boost=60.0)
    assert [s for _, s in gentle] == [True, True] and 6 < len(gentle[0][0]) < 30  # grows with the overrun


class _SilentCodec:
    """decode only: synthesize_batch's last step, without building EnCodec."""
    sample_rate, frame_rate_hz = 24000, 75.0

    def decode(self, codes):
        return torch.zeros(codes.shape[0], codes.shape[-1] * 320)


def test_length_ratio_cap_and_boost_in_synthesis():
    from valle_tts.synthesize import synthesize_batch
    torch.manual_seed(0)
    model = VALLE(CFG, 40).eval()
    with torch.no_grad():
        model.ar.head.bias[model.ar.eos] = -30.0
    tokens = TokenTable(list("abcdefghij"))
    request = ("abcde fghij", torch.randint(0, 16, (4, 2)))  # 11 tokens, a 4-frame prompt
    fixed = SynthConfig(temperature=0.0, max_frames_per_token=4.0)
    # 2 frames per token: 22 expected in all, 18 of them new
    [plain] = synthesize_batch(model, tokens, _SilentCodec(), [request], fixed, frames_per_token=2.0)
    assert (len(plain.codes), plain.stopped, plain.expected_frames) == (40, False, 18.0)  # 4 x 11 - 4
    [capped] = synthesize_batch(model, tokens, _SilentCodec(), [request],
                                dataclasses.replace(fixed, max_length_ratio=1.5), frames_per_token=2.0)
    assert (len(capped.codes), capped.stopped) == (27, False)
    [boosted] = synthesize_batch(model, tokens, _SilentCodec(), [request],
                                 dataclasses.replace(fixed, eos_boost=1000.0), frames_per_token=2.0)
    assert (len(boosted.codes), boosted.stopped) == (19, True)
    assert boosted.wave.shape == (19 * 320,)


def test_summary_reports_cap_loop_and_length_ratio_per_row():
    def row(system, mode, stopped, loop, ratio):
        return {"system": system, "mode": mode, "errors": "0", "ref_words": "1", "sim": "", "synth_s": "0",
                "audio_s": "1", "stopped": stopped, "loop": loop, "length_ratio": ratio}
    rows = [row("codec_resynthesis", "-", "", "0", "1.0"), row("codec_resynthesis", "-", "", "1", "0.8"),
            row("valle", "cross", "1", "0", "1.2"), row("valle", "cross", "0", "1", "3.0"),
            row("valle", "cross", "0", "0", "2.4"), row("valle", "cross", "1", "0", "1.0")]
    by_row = {(r["system"], r["mode"]): r for r in summarise(rows)}
    cross = by_row[("valle", "cross")]
    assert (cross["cap_rate"], cross["loop_rate"], cross["length_ratio"]) == pytest.approx((0.5, 0.25, 1.9))
    reference = by_row[("codec_resynthesis", "-")]
    assert reference["cap_rate"] == 0.0  # nothing generated, nothing capped
    assert (reference["loop_rate"], reference["length_ratio"]) == pytest.approx((0.5, 0.9))
