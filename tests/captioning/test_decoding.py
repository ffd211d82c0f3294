"""Greedy and beam search: beam 1 equals greedy, beam search equals brute-force search on a tiny
model, batched beams equal per-image beams; the step interface matches the training forward."""
import itertools

import pytest
import torch

from captioning.decoding import beam_search, greedy_decode
from captioning.models.attention_lstm import AttentionLSTMDecoder
from captioning.models.transformer import TransformerDecoder

PAD, START, END, UNK = 0, 1, 2, 3
BANNED = (START, PAD)


def tiny_decoder(kind, vocab_size=7, seed=0):
    torch.manual_seed(seed)
    if kind == "lstm":
        dec = AttentionLSTMDecoder(vocab_size, encoder_dim=6, embed_dim=5, hidden_dim=8, attention_dim=4, dropout=0.0)
    else:
        dec = TransformerDecoder(vocab_size, encoder_dim=6, num_positions=4, d_model=8, heads=2, layers=2,
                                 ff_dim=16, dropout=0.0, max_len=16)
    # Sharper output distributions make the search problem non-trivial.
    with torch.no_grad():
        dec.out.weight.mul_(4.0)
    return dec.double().eval()


def sequence_log_prob(dec, features, tokens):
    """log p(tokens) under the decoder, one image, start token fed first."""
    memory = dec.prepare_memory(features)
    state = dec.init_state(memory)
    prev = torch.tensor([START])
    total = 0.0
    for tok in tokens:
        logits, state, _ = dec.step(prev, state, memory)
        total += torch.log_softmax(logits, -1)[0, tok].item()
        prev = torch.tensor([tok])
    return total


def brute_force(dec, features, max_len, length_penalty):
    """Every sequence of at most max_len tokens that ends with <end> (or is cut at max_len),
    scored by the teacher-forced forward pass, one batch per length."""
    words = [t for t in range(dec.out.out_features) if t not in BANNED + (END,)]
    best, best_seq = -float("inf"), None
    for n in range(max_len + 1):
        seqs = torch.tensor([list(body) + ([END] if n < max_len else [])
                             for body in itertools.product(words, repeat=n)])
        if seqs.size(1) == 0:
            continue
        inputs = torch.cat([torch.full((len(seqs), 1), START), seqs[:, :-1]], dim=1)
        logits, _ = dec(features.expand(len(seqs), -1, -1), inputs)
        scores = torch.log_softmax(logits, -1).gather(2, seqs.unsqueeze(2)).sum(dim=(1, 2))
        ranked = scores / seqs.size(1) ** length_penalty
        if ranked.max().item() > best:
            best, best_seq = ranked.max().item(), seqs[ranked.argmax()].tolist()
    return best_seq


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_equals_brute_force(kind, length_penalty):
    dec = tiny_decoder(kind)
    max_len = 3
    for image in range(3):
        features = torch.randn(1, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(image))
        expected = brute_force(dec, features, max_len, length_penalty)
        # 1 + 4 + 16 + 64 = 85 complete hypotheses of length <= 3: a beam of 100 holds them all.
        out = beam_search(dec, features, START, END, PAD, beam_size=100, max_len=max_len,
                          length_penalty=length_penalty, banned_ids=BANNED)
        found = out.tokens[0, :int(out.lengths[0])].tolist()
        assert found == expected
        assert out.scores[0].item() == pytest.approx(sequence_log_prob(dec, features, expected))


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_beam_of_one_is_greedy(kind):
    dec = tiny_decoder(kind, vocab_size=12)
    features = torch.randn(5, 4, 6, dtype=torch.float64)
    greedy = greedy_decode(dec, features, START, END, PAD, max_len=8, banned_ids=BANNED)
    beam = beam_search(dec, features, START, END, PAD, beam_size=1, max_len=8, banned_ids=BANNED)
    assert torch.equal(greedy.lengths, beam.lengths)
    width = greedy.tokens.size(1)
    assert torch.equal(greedy.tokens, beam.tokens[:, :width])
    assert torch.allclose(greedy.scores, beam.scores)
    assert torch.allclose(greedy.alphas, beam.alphas[:, :width])


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_batched_beam_equals_per_image_beam(kind):
    dec = tiny_decoder(kind, vocab_size=12, seed=1)
    features = torch.randn(6, 4, 6, dtype=torch.float64)
    batched = beam_search(dec, features, START, END, PAD, beam_size=4, max_len=10, length_penalty=0.7,
                          banned_ids=BANNED)
    for i in range(6):
        single = beam_search(dec, features[i:i + 1], START, END, PAD, beam_size=4, max_len=10,
                             length_penalty=0.7, banned_ids=BANNED)
        length = int(single.lengths[0])
        assert int(batched.lengths[i]) == length
        assert batched.tokens[i, :length].tolist() == single.tokens[0, :length].tolist()
        assert batched.scores[i].item() == pytest.approx(single.scores[0].item())
        assert torch.allclose(batched.alphas[i, :length], single.alphas[0, :length])


def test_beam_never_emits_banned_tokens_and_pads_after_end():
    dec = tiny_decoder("lstm", vocab_size=12)
    with torch.no_grad():   # make <start> and <pad> the most likely outputs: they must still not appear
        dec.out.bias[START] = 50.0
        dec.out.bias[PAD] = 40.0
    out = beam_search(dec, torch.randn(4, 4, 6, dtype=torch.float64), START, END, PAD, beam_size=3,
                      max_len=6, banned_ids=BANNED)
    for tokens, length in zip(out.tokens, out.lengths):
        assert START not in tokens[:length].tolist() and PAD not in tokens[:length].tolist()
        assert (tokens[length:] == PAD).all()


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_step_interface_matches_teacher_forced_forward(kind):
    """Decoding step by step gives the logits and attention of the parallel/teacher-forced forward,
    and (transformer) a position never sees the tokens after it."""
    dec = tiny_decoder(kind, vocab_size=12)
    features = torch.randn(3, 4, 6, dtype=torch.float64)
    inputs = torch.randint(3, 12, (3, 5))
    logits, alphas = dec(features, inputs)
    memory = dec.prepare_memory(features)
    state = dec.init_state(memory)
    for t in range(5):
        step_logits, state, alpha = dec.step(inputs[:, t], state, memory)
        assert torch.allclose(step_logits, logits[:, t], atol=1e-10)
        assert torch.allclose(alpha, alphas[:, t], atol=1e-10)
    changed = inputs.clone()
    changed[:, 3:] = 4
    assert torch.allclose(dec(features, changed)[0][:, :3], logits[:, :3], atol=1e-10)
    assert torch.allclose(alphas.sum(-1), torch.ones(3, 5, dtype=torch.float64))


# Outputs of the decoders and searches as they were before the beam search stopped copying the
# features across beams (recorded 2026-12-03): the speed-ups must not change a token or a score.
RECORDED = {
    ("lstm", 4): {
        "greedy": ([[7, 7, 11, 9, 9, 11, 9], [9, 11, 11, 11, 11, 11, 11], [7, 7, 7, 11, 9, 11, 9]],
                   [-14.394339, -11.194305, -14.529848]),
        "beam": ([[11, 9, 9, 9, 9, 9, 11], [9, 11, 7, 11, 11, 11, 11], [7, 7, 7, 7, 7, 7, 11]],
                 [-13.843762, -11.160067, -14.388337]),
    },
    ("transformer", 3): {
        "greedy": ([[7, 7, 11, 7, 11, 6, 3], [7, 7, 11, 7, 7, 6, 3], [7, 6, 9, 7, 11, 6, 3]],
                   [-9.18616, -5.997054, -9.537447]),
        "beam": ([[7, 7, 11, 7, 11, 9, 5], [7, 7, 6, 8, 5, 11, 5], [7, 6, 9, 7, 6, 9, 5]],
                 [-7.946227, -4.281951, -6.981953]),
    },
}


@pytest.mark.parametrize("kind, seed", list(RECORDED))
def test_outputs_unchanged_on_a_fixed_random_model(kind, seed):
    dec = tiny_decoder(kind, vocab_size=12, seed=seed)
    with torch.no_grad():   # fewer early <end>s: longer captions where beam and greedy disagree
        dec.out.bias[END] -= 3.0
    features = torch.randn(3, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 3
    outputs = {
        "greedy": greedy_decode(dec, features, START, END, PAD, max_len=7, banned_ids=BANNED),
        "beam": beam_search(dec, features, START, END, PAD, beam_size=3, max_len=7, length_penalty=0.5,
                            banned_ids=BANNED),
    }
    for name, out in outputs.items():
        tokens, scores = RECORDED[kind, seed][name]
        assert out.tokens.tolist() == tokens, name
        assert out.scores.tolist() == pytest.approx(scores, abs=1e-6), name
