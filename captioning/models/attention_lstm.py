"""Show, Attend and Tell (Xu et al. 2015): an LSTM decoder with soft (additive) attention over the
encoder grid, the gating scalar beta on the context vector, and attention weights returned for the
doubly stochastic regularisation and the attention-map figures.

Every decoder here has the same step interface, which greedy and beam search use:
    memory = dec.prepare_memory(features)          # dict of (B, ...) tensors, computed once
    state = dec.init_state(memory)                 # dict of (B, ...) tensors
    logits, state, alpha = dec.step(tokens, state, memory)   # tokens (B,) -> (B, V), _, (B, P)
A step also takes K hypotheses per image (beam search): tokens and state then have B*K rows, the K
rows of an image adjacent, while the memory keeps its B rows; nothing of the memory is copied per beam.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from captioning.scheduled_sampling import mix_in_predictions


class SoftAttention(nn.Module):
    """alpha = softmax(w . tanh(W_f f_p + W_h h)) over the P grid positions."""

    def __init__(self, encoder_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.feature_proj = nn.Linear(encoder_dim, attention_dim)
        self.hidden_proj = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, features, projected_features, hidden):
        """features (B, P, D), projected_features (B, P, A), hidden (B*K, H) with K hypotheses per
        image in adjacent rows -> context (B*K, D), alpha (B*K, P)."""
        batch, positions, encoder_dim = features.shape
        hidden_part = self.hidden_proj(hidden).view(batch, -1, 1, projected_features.size(2))   # (B, K, 1, A)
        # (B, K, P, A) by broadcasting: the K hypotheses of an image share its projected features
        scores = self.score((projected_features.unsqueeze(1) + hidden_part).tanh_()).squeeze(3)
        alpha = torch.softmax(scores, dim=2)                                                    # (B, K, P)
        context = torch.bmm(alpha, features)                                                    # (B, K, D)
        return context.view(-1, encoder_dim), alpha.view(-1, positions)


class AttentionLSTMDecoder(nn.Module):
    def __init__(self, vocab_size: int, encoder_dim: int, embed_dim: int = 512, hidden_dim: int = 512,
                 attention_dim: int = 512, dropout: float = 0.5):
        super().__init__()
        self.attention = SoftAttention(encoder_dim, hidden_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.init_h = nn.Linear(encoder_dim, hidden_dim)
        self.init_c = nn.Linear(encoder_dim, hidden_dim)
        self.gate = nn.Linear(hidden_dim, encoder_dim)   # beta = sigmoid(gate(h)): "is there something to look at"
        self.lstm = nn.LSTMCell(embed_dim + encoder_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def prepare_memory(self, features: torch.Tensor) -> dict:
        """features (B, P, D): the attention projection of the features is computed once, not per step."""
        return {"features": features, "projected": self.attention.feature_proj(features)}

    def init_state(self, memory: dict) -> dict:
        mean = memory["features"].mean(dim=1)
        return {"h": torch.tanh(self.init_h(mean)), "c": torch.tanh(self.init_c(mean))}

    def step(self, tokens: torch.Tensor, state: dict, memory: dict):
        """tokens (B*K,), state (B*K, ...), memory (B, ...) -> logits (B*K, V), new state, alpha (B*K, P)."""
        context, alpha = self.attention(memory["features"], memory["projected"], state["h"])
        context = torch.sigmoid(self.gate(state["h"])) * context
        h, c = self.lstm(torch.cat([self.embedding(tokens), context], dim=1), (state["h"], state["c"]))
        return self.out(self.dropout(h)), {"h": h, "c": c}, alpha

    def forward(self, features: torch.Tensor, inputs: torch.Tensor, teacher_forcing_prob: float = 1.0,
                draw: str = "sample"):
        """features (B, P, D), inputs (B*K, T) = <start> w1 .. (the caption without its last token),
        K captions per image in adjacent rows (K = 1 but in self-critical training)
        -> logits (B*K, T, V), alphas (B*K, T, P). With teacher_forcing_prob < 1 (scheduled sampling),
        each input token after the first is replaced, with probability 1 - p, by the model's own
        prediction at the previous step (drawn from its softmax, or its argmax)."""
        memory = self.prepare_memory(features)
        per_image = inputs.size(0) // features.size(0)
        state = {k: v.repeat_interleave(per_image, dim=0) for k, v in self.init_state(memory).items()}
        logits_steps, alpha_steps = [], []
        for t in range(inputs.size(1)):
            tokens = inputs[:, t]
            if t > 0 and teacher_forcing_prob < 1.0:
                tokens = mix_in_predictions(tokens, logits_steps[-1], teacher_forcing_prob, draw)
            logits, state, alpha = self.step(tokens, state, memory)
            logits_steps.append(logits)
            alpha_steps.append(alpha)
        return torch.stack(logits_steps, dim=1), torch.stack(alpha_steps, dim=1)
