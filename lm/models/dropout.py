"""The dropouts that make small-data language models strong (Gal & Ghahramani 2016; Merity et al.
2018, AWD-LSTM): whole words dropped from the embedding matrix, and one dropout mask per sequence
shared over all time steps ("locked" or variational dropout)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def embedding_dropout(embedding: nn.Embedding, tokens: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Look up `tokens` (batch, time) -> (batch, time, dim) with whole rows of the embedding
    matrix zeroed with probability `p` (a dropped word is dropped at every position of the batch)."""
    weight = embedding.weight
    if training and p > 0:
        keep = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
        weight = weight * keep
    return F.embedding(tokens, weight)


class LockedDropout(nn.Module):
    """Dropout on (batch, time, features) with the mask drawn once per sequence, not per step."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask
