"""Text tokens, AR/NAR shapes, the AR's causal mask, NAR conditioning and stage selection,
sampling and the generation length limit / stop handling."""
from __future__ import annotations

import shutil

import pytest
import torch

from common.config import ConfigError
from valle_tts.data import collate
from valle_tts.models.valle import VALLE, ARModel, ModelConfig, NARModel, lengths_mask, sample_tokens
from valle_tts.text import CHARS, TokenTable, lost_characters, normalize_transcript

CFG = ModelConfig(d_model=32, num_layers=2, num_heads=2, dropout=0.0, codebook_size=16, num_codebooks=4)


def test_normalize_transcript():
    assert normalize_transcript("  Mr. Smith’s   CAT; “ran”!\n") == "mr. smith's cat ran!"
    assert normalize_transcript("«»") == ""


@pytest.mark.parametrize("raw, normalised, lost", [
    ("The café in 北京 cost 100 euros", "the cafe in cost one hundred euros", "北京"),
    ("Œuvre, Straße; Łódź and Ørsted", "oeuvre, strasse lodz and orsted", ""),
    ("1,250 people, 3.5 m, the 2nd try: 40% & 21st", "one thousand two hundred and fifty people, three point "
     "five m, the second try forty percent and twenty-first", ""),
    ("It cost $5 (£3)", "it cost five three", "$£"),
])
def test_numbers_and_foreign_letters_are_spelled_not_dropped(raw, normalised, lost):
    assert normalize_transcript(raw) == normalised
    assert lost_characters(raw) == lost
    assert set(normalised) <= set(CHARS)


def test_character_tokens_are_the_normaliser_alphabet():
    table = TokenTable.build([CHARS])
    assert len(table) == 2 + len(CHARS)
    assert table.decode(table.encode(normalize_transcript("Hello, world: 7 o'clock?"))) == \
        "hello, world seven o'clock?"


def test_token_table_round_trip(tmp_path):
    table = TokenTable.build(["hello world", "a cat."])
    table.save(tmp_path / "tokens.txt")
    loaded = TokenTable.load(tmp_path / "tokens.txt")
    assert loaded.symbols == table.symbols
    ids = loaded.encode("hello cat.")
    assert 0 not in ids and 1 not in ids
    assert loaded.decode(ids) == "hello cat."
    assert loaded.encode("z")[0] == 1  # unknown symbol


def test_token_table_errors(tmp_path):
    with pytest.raises(ConfigError, match="run the prepare stages"):
        TokenTable.load(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("#kind chars\n<pad> 0\n<unk> 2\n")
    with pytest.raises(ConfigError, match=r"bad.txt line 3: expected '<symbol> 1'"):
        TokenTable.load(tmp_path / "bad.txt")


@pytest.mark.skipif(shutil.which("espeak-ng") is not None, reason="espeak-ng is installed here")
def test_phonemes_without_espeak_is_one_clear_error():
    with pytest.raises(ConfigError, match="needs espeak-ng, which is not installed"):
        TokenTable.build(["hello"], kind="phonemes")


def test_collate_and_lengths_mask():
    batch = collate([torch.tensor([3, 4, 5]), torch.tensor([6])],
                    [torch.ones(5, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long)])
    assert batch["text"].tolist() == [[3, 4, 5], [6, 0, 0]]
    assert batch["codes"].shape == (2, 5, 4) and batch["codes"][1, 2:].sum() == 0
    assert batch["audio_lens"].tolist() == [5, 2]
    assert lengths_mask(batch["audio_lens"], 5).tolist()[1] == [True, True, False, False, False]


def _batch(B=2, T_text=5, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(2, 10, (B, T_text), generator=g)
    codes = torch.randint(0, CFG.codebook_size, (B, T, CFG.num_codebooks), generator=g)
    return text, torch.tensor([T_text, T_text - 2]), codes, torch.tensor([T, T - 3])


def test_shapes_and_targets():
    torch.manual_seed(0)
    model = VALLE(CFG, 10)
    text, text_lens, codes, audio_lens = _batch()
    out = model(text, text_lens, codes, audio_lens, torch.tensor([2, 1]), stage=2)
    ar_logits, ar_targets = out["ar"]
    assert ar_logits.shape == (2, 8, CFG.codebook_size + 1)
    # [c1..cT EOS] then ignored padding
    assert ar_targets[0].tolist() == codes[0, :, 0].tolist() + [CFG.codebook_size]
    assert ar_targets[1, :5].tolist() == codes[1, :4, 0].tolist() + [CFG.codebook_size]
    assert (ar_targets[1, 5:] == -100).all()
    nar_logits, nar_targets = out["nar"]
    assert nar_logits.shape == (2, 7, CFG.codebook_size)
    assert (nar_targets[0, :2] == -100).all() and nar_targets[0, 2:].tolist() == codes[0, 2:, 2].tolist()
    assert (nar_targets[1, 4:] == -100).all()  # padding


def test_ar_is_causal_over_audio():
    torch.manual_seed(0)
    ar = ARModel(CFG, 10).eval()
    text, text_lens, codes, _ = _batch(B=1)
    audio_in = codes[..., 0]
    lens = torch.tensor([audio_in.shape[1]])
    base = ar(text, text_lens[:1], audio_in, lens)
    changed = audio_in.clone()
    changed[0, 4] = (changed[0, 4] + 1) % CFG.codebook_size
    after = ar(text, text_lens[:1], changed, lens)
    assert torch.allclose(base[0, :4], after[0, :4], atol=1e-6)  # no earlier position sees token 4
    assert not torch.allclose(base[0, 4:], after[0, 4:])
    mask = ar.attention_mask(torch.tensor([3]), 4, torch.tensor([5]), 5)[0, 0]
    assert not mask[:4, 4:].any()            # text never attends to audio
    assert mask[0, 2] and not mask[0, 3]     # bidirectional text, padding key masked
    assert mask[6, :3].all() and mask[6, 4:7].all() and not mask[6, 7:].any()


def test_ar_text_causal_switch():
    mask = ARModel(ModelConfig(**{**CFG.__dict__, "text_causal": True}), 10).attention_mask(
        torch.tensor([4]), 4, torch.tensor([2]), 2)[0, 0]
    assert not mask[0, 1] and mask[1, 0]


def test_nar_conditioning_and_stage_selection():
    torch.manual_seed(0)
    nar = NARModel(CFG, 10).eval()
    text, text_lens, codes, audio_lens = _batch(B=1)
    prompt_lens = torch.tensor([3])
    stage = 2
    base = nar(text, text_lens[:1], codes, audio_lens[:1], prompt_lens, stage)

    def changed(frame, codebook):
        other = codes.clone()
        other[0, frame, codebook] = (other[0, frame, codebook] + 1) % CFG.codebook_size
        return nar(text, text_lens[:1], other, audio_lens[:1], prompt_lens, stage)
    # target frames: codebooks >= stage are unknown at this stage and must not matter
    assert torch.allclose(base, changed(5, stage), atol=1e-6)
    assert torch.allclose(base, changed(5, 3), atol=1e-6)
    # target codebooks < stage, and every codebook of the prompt, condition the prediction
    assert not torch.allclose(base, changed(5, 1))
    assert not torch.allclose(base, changed(1, 3))
    # the stage embedding changes the output; stage 0 is the AR's job
    assert not torch.allclose(base, nar(text, text_lens[:1], codes, audio_lens[:1], prompt_lens, 1))
    with pytest.raises(ValueError, match="NAR stage must be in 1..3"):
        nar(text, text_lens[:1], codes, audio_lens[:1], prompt_lens, 0)


def test_nar_stage_embedding_alternative():
    nar = NARModel(ModelConfig(**{**CFG.__dict__, "nar_stage": "add"}), 10)
    text, text_lens, codes, audio_lens = _batch()
    assert nar(text, text_lens, codes, audio_lens, torch.tensor([2, 2]), 3).shape == (2, 7, 16)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0]])
    draw = lambda *args: int(sample_tokens(logits, *args)[0])
    assert draw(0.0, 0, 1.0) == 1
    g = torch.Generator().manual_seed(0)
    assert {draw(1.0, 1, 1.0, g) for _ in range(20)} == {1}
    assert {draw(1.0, 0, 0.3, g) for _ in range(20)} == {1}
    assert {draw(1.0, 2, 1.0, g) for _ in range(50)} == {1, 2}


def test_generation_stops_on_end_token_and_respects_the_limit():
    torch.manual_seed(0)
    ar = ARModel(CFG, 10).eval()
    text, prompt = torch.tensor([2, 3, 4]), torch.tensor([1, 2])
    with torch.no_grad():
        ar.head.bias.fill_(-100.0)
        ar.head.bias[ar.eos] = 100.0  # always the end token
    codes, stopped = ar.generate(text, prompt, max_new=10, temperature=1.0, top_k=5)
    assert stopped and len(codes) == 0
    with torch.no_grad():
        ar.head.bias[ar.eos] = -100.0
        ar.head.bias[7] = 100.0  # never the end token
    codes, stopped = ar.generate(text, prompt, max_new=6, temperature=1.0)
    assert not stopped and codes.tolist() == [7] * 6
    # repetition-aware sampling redraws a token that fills the recent window from the full
    # distribution (here still 7, the only likely one): the limit and the result hold
    codes, stopped = ar.generate(text, prompt, max_new=6, temperature=1.0, ras_window=3, ras_ratio=0.5)
    assert not stopped and len(codes) == 6


def test_cached_generation_matches_full_recomputation():
    torch.manual_seed(0)
    ar = ARModel(CFG, 10).eval()
    text, prompt = torch.tensor([2, 3, 4, 5]), torch.tensor([1, 2, 3])
    with torch.no_grad():
        ar.head.bias[ar.eos] = -100.0  # run to the limit
    codes, _ = ar.generate(text, prompt, max_new=8, temperature=0.0)
    audio = torch.cat([torch.tensor([ar.bos]), prompt])
    expected = []
    for _ in range(8):  # greedy, recomputing the whole sequence each step
        logits = ar(text[None], torch.tensor([4]), audio[None], torch.tensor([len(audio)]))[0, -1]
        expected.append(int(logits.argmax()))
        audio = torch.cat([audio, torch.tensor([expected[-1]])])
    assert codes.tolist() == expected


def test_nar_generate_fills_every_codebook():
    torch.manual_seed(0)
    nar = NARModel(CFG, 10).eval()
    prompt = torch.randint(0, 16, (3, 4))
    codes = nar.generate(torch.tensor([2, 3, 4]), prompt, torch.tensor([5, 6, 7, 8]))
    assert codes.shape == (4, 4) and codes[:, 0].tolist() == [5, 6, 7, 8]
