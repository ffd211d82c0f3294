"""A Transformer caption decoder: causal self-attention over the words, cross-attention over the
encoder grid (its last layer's weights, averaged over heads, are the attention maps). Same step
interface as the LSTM decoder; a step re-runs the prefix (captions are short, ~20 tokens).

Scheduled sampling for a parallel decoder (Mihaylova & Martins 2019): a first pass with the gold
inputs predicts every position; the second pass, the one trained, reads a mix of gold tokens and
those predictions.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from captioning.scheduled_sampling import mix_in_predictions


class DecoderLayer(nn.Module):
    """Pre-norm: self-attention (causal), cross-attention to the image, feed-forward."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_dim, d_model))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, memory, causal_mask):
        """x (B*K, T, d), memory (B, P, d) -> x (B*K, T, d), cross-attention weights (B*K, T, P)."""
        h = self.norms[0](x)
        x = x + self.dropout(self.self_attn(h, h, h, attn_mask=causal_mask, need_weights=False)[0])
        # K hypotheses per image (beam search, x has B*K rows): their queries go into one row per
        # image, so the memory is not copied per beam.
        h = self.norms[1](x).reshape(memory.size(0), -1, x.size(2))                     # (B, K*T, d)
        attended, weights = self.cross_attn(h, memory, memory, need_weights=True, average_attn_weights=True)
        x = x + self.dropout(attended.reshape(x.shape))
        return x + self.dropout(self.ff(self.norms[2](x))), weights.reshape(x.size(0), x.size(1), -1)


class TransformerDecoder(nn.Module):
    def __init__(self, vocab_size: int, encoder_dim: int, num_positions: int, d_model: int = 512,
                 heads: int = 8, layers: int = 3, ff_dim: int = 2048, dropout: float = 0.1,
                 max_len: int = 64):
        super().__init__()
        self.memory_proj = nn.Linear(encoder_dim, d_model)
        self.memory_pos = nn.Parameter(torch.zeros(1, num_positions, d_model))
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.token_pos = nn.Embedding(max_len, d_model)
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, ff_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.memory_pos, std=0.02)

    def prepare_memory(self, features: torch.Tensor) -> dict:
        return {"memory": self.memory_proj(features) + self.memory_pos}

    def init_state(self, memory: dict) -> dict:
        batch = memory["memory"].size(0)
        return {"tokens": torch.zeros(batch, 0, dtype=torch.long, device=memory["memory"].device)}

    def decode(self, inputs: torch.Tensor, memory: torch.Tensor):
        """inputs (B, T) -> logits (B, T, V), last layer's cross-attention (B, T, P)."""
        steps = inputs.size(1)
        x = self.dropout(self.embedding(inputs) + self.token_pos(torch.arange(steps, device=inputs.device)))
        causal = torch.triu(torch.ones(steps, steps, dtype=torch.bool, device=inputs.device), diagonal=1)
        for layer in self.layers:
            x, weights = layer(x, memory, causal)
        return self.out(self.norm(x)), weights

    def step(self, tokens: torch.Tensor, state: dict, memory: dict):
        prefix = torch.cat([state["tokens"], tokens.unsqueeze(1)], dim=1)
        logits, weights = self.decode(prefix, memory["memory"])
        return logits[:, -1], {"tokens": prefix}, weights[:, -1]

    def forward(self, features: torch.Tensor, inputs: torch.Tensor, teacher_forcing_prob: float = 1.0,
                draw: str = "sample"):
        """features (B, P, D), inputs (B*K, T), K captions per image in adjacent rows (K = 1 but in
        self-critical training) -> logits (B*K, T, V), cross-attention (B*K, T, P)."""
        memory = self.prepare_memory(features)["memory"]
        if teacher_forcing_prob < 1.0:
            with torch.no_grad():
                first_logits, _ = self.decode(inputs, memory)
            # Autocast keeps its half-precision copies of the weights until the autocast region
            # ends; those made under no_grad have no graph, so the pass below would reuse them and
            # the weights would get no gradient at all (pytorch/pytorch#112583).
            torch.clear_autocast_cache()
            # Position t+1 reads the prediction made at position t; position 0 keeps <start>.
            mixed = mix_in_predictions(inputs[:, 1:], first_logits[:, :-1], teacher_forcing_prob, draw)
            inputs = torch.cat([inputs[:, :1], mixed], dim=1)
        return self.decode(inputs, memory)
