"""Recurrent language models: Elman RNN (tanh or ReLU), GRU and LSTM, with the AWD-LSTM
regularisers (Merity et al. 2018): embedding dropout, locked dropout on the input, between layers
and on the output, DropConnect on the hidden-to-hidden weights ("weight drop"), and weight tying."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from lm.models.dropout import LockedDropout, embedding_dropout

CELLS = {"rnn_tanh": (nn.RNN, {"nonlinearity": "tanh"}), "rnn_relu": (nn.RNN, {"nonlinearity": "relu"}),
         "gru": (nn.GRU, {}), "lstm": (nn.LSTM, {})}


class RecurrentLM(nn.Module):
    """forward(tokens (batch, time), state) -> (logits (batch, time, vocab), state).

    The state is one hidden state per layer (a (h, c) pair for the LSTM), each (1, batch, size);
    None starts from zeros. One single-layer RNN module per layer so that locked dropout and weight
    drop apply between layers; with tied weights the last layer's size is the embedding size."""

    def __init__(self, vocab_size: int, cell: str = "lstm", emb_dim: int = 400, hidden: int = 1150,
                 layers: int = 3, tie_weights: bool = True, dropout_emb: float = 0.1,
                 dropout_input: float = 0.4, dropout_hidden: float = 0.25, dropout: float = 0.4,
                 weight_drop: float = 0.5):
        super().__init__()
        rnn_class, kwargs = CELLS[cell]
        self.dropout_emb, self.weight_drop = dropout_emb, weight_drop
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        sizes = [emb_dim] + [hidden] * (layers - 1) + [emb_dim if tie_weights else hidden]
        self.rnns = nn.ModuleList(rnn_class(sizes[i], sizes[i + 1], batch_first=True, **kwargs)
                                  for i in range(layers))
        self.input_dropout = LockedDropout(dropout_input)
        self.hidden_dropout = LockedDropout(dropout_hidden)
        self.output_dropout = LockedDropout(dropout)
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def _run_layer(self, rnn: nn.RNNBase, x: torch.Tensor, state):
        if not (self.training and self.weight_drop > 0):
            return rnn(x, state)
        # DropConnect: one mask on the recurrent matrix per forward pass, the same at every step.
        weights = dict(rnn.named_parameters())
        weights["weight_hh_l0"] = F.dropout(weights["weight_hh_l0"], self.weight_drop, training=True)
        return functional_call(rnn, weights, (x, state))

    def forward(self, tokens: torch.Tensor, state: list | None = None):
        x = embedding_dropout(self.embedding, tokens, self.dropout_emb, self.training)
        x = self.input_dropout(x)
        new_state = []
        for i, rnn in enumerate(self.rnns):
            x, layer_state = self._run_layer(rnn, x, state[i] if state is not None else None)
            new_state.append(layer_state)
            x = self.hidden_dropout(x) if i < len(self.rnns) - 1 else self.output_dropout(x)
        return self.decoder(x), new_state
