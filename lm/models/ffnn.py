"""Feed-forward n-gram language model (Bengio et al. 2003): the embeddings of the last
`context_size` words, concatenated, through tanh layers to a softmax over the vocabulary."""
from __future__ import annotations

import torch
import torch.nn as nn

from lm.models.dropout import embedding_dropout


class FeedForwardLM(nn.Module):
    """forward(tokens (batch, time), state) -> (logits (batch, time, vocab), state).

    The state is the last `context_size - 1` input tokens (batch, context_size - 1), so the first
    positions of a chunk see the end of the previous chunk; without a state they see `<eos>` (id 0),
    as at the start of a text."""

    def __init__(self, vocab_size: int, context_size: int = 4, emb_dim: int = 200, hidden: int = 400,
                 layers: int = 1, dropout: float = 0.3, dropout_emb: float = 0.0, tie_weights: bool = True):
        super().__init__()
        self.context_size = context_size
        self.dropout_emb = dropout_emb
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        blocks, width = [], context_size * emb_dim
        for _ in range(layers):
            blocks += [nn.Dropout(dropout), nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        if tie_weights:  # project to the embedding size so the output layer can share its matrix
            blocks.append(nn.Linear(width, emb_dim))
            width = emb_dim
        blocks.append(nn.Dropout(dropout))
        self.hidden_layers = nn.Sequential(*blocks)
        self.decoder = nn.Linear(width, vocab_size)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None):
        batch, _ = tokens.shape
        if state is None:
            state = tokens.new_zeros(batch, self.context_size - 1)
        history = torch.cat([state, tokens], dim=1)                   # (batch, n-1 + time)
        windows = history.unfold(1, self.context_size, 1)              # (batch, time, n)
        emb = embedding_dropout(self.embedding, windows, self.dropout_emb, self.training)
        features = self.hidden_layers(emb.flatten(2))                  # (batch, time, width)
        return self.decoder(features), history[:, history.size(1) - (self.context_size - 1):]
