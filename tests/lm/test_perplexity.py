"""Perplexity against hand-computed values, and the Transformer's sliding window."""
import math

import torch
import torch.nn as nn

from lm.models import TransformerLM
from lm.perplexity import chunking, perplexity, stream_nll


class BigramTable(nn.Module):
    """P(next | current) from a fixed table: logits = log table[current]."""

    def __init__(self, table):
        super().__init__()
        self.log_table = nn.Parameter(torch.tensor(table).log())

    def forward(self, tokens, state=None):
        return self.log_table[tokens], None


def test_perplexity_matches_a_hand_computed_case():
    # vocabulary {0: <eos>, 1: a, 2: b}; P(.|eos) = (.2, .5, .3), P(.|a) = (.1, .1, .8), P(.|b) = (.6, .2, .2)
    model = BigramTable([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    stream = torch.tensor([1, 2, 0, 2])  # "a b <eos> b", read after an <eos>
    # P = P(a|eos) P(b|a) P(eos|b) P(b|eos) = .5 * .8 * .6 * .3
    expected = math.exp(-(math.log(0.5) + math.log(0.8) + math.log(0.6) + math.log(0.3)) / 4)
    for rows, chunk in [(1, 1), (1, 3), (2, 1), (3, 2)]:
        nll, count = stream_nll(model, stream, rows, chunk)
        assert count == 4
        assert perplexity(nll, count) == pytest_approx(expected)


def pytest_approx(x):
    import pytest
    return pytest.approx(x, rel=1e-6)


def test_sliding_window_matches_full_context_when_the_text_fits_the_window():
    torch.manual_seed(0)
    model = TransformerLM(11, emb_dim=16, layers=2, heads=2, ff_dim=32, positions="learned", max_len=64).eval()
    stream = torch.randint(0, 11, (30,))
    full_nll, n = stream_nll(model, stream, rows=1, chunk_len=30)
    chunk_len, memory_len = chunking(model, bptt=35, context=40, stride=5)
    assert (chunk_len, memory_len) == (5, 35)
    windowed_nll, m = stream_nll(model, stream, 1, chunk_len, memory_len)
    assert n == m == 30
    assert abs(full_nll - windowed_nll) < 1e-3
    # a short window loses context, which changes (here: worsens or at least alters) the score
    short_nll, _ = stream_nll(model, stream, 1, *chunking(model, bptt=35, context=4, stride=2))
    assert abs(short_nll - full_nll) > 1e-3
    assert model.memory_len == 0  # evaluation restores the training setting
