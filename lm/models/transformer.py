"""Causal Transformer language model, pre-LN (GPT-2 style): LayerNorm before attention and MLP,
residual streams untouched, a final LayerNorm; sinusoidal, learned or rotary positions; tied
input/output embeddings. Pre-LN trains stably with warmup and without the fragile post-LN tuning."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.config import ConfigError


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sin/cos positions of Vaswani et al. 2017."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


def rotate(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) of (batch, heads, time, head_dim): pairs of
    features rotated by an angle proportional to the position, so q.k depends on relative offset."""
    _, _, length, dim = x.shape
    freq = base ** (-torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim)
    angle = torch.arange(length, device=x.device, dtype=torch.float32)[:, None] * freq  # (time, dim/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, attn_dropout: float, dropout: float, rotary: bool):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"model.emb_dim={dim} must be divisible by model.heads={heads}")
        self.heads, self.rotary, self.attn_dropout = heads, rotary, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, dim) -> (batch, time, dim); position t attends to positions <= t only."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if self.rotary:
            q, k = rotate(q), rotate(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        return self.dropout(self.out(y.transpose(1, 2).reshape(batch, length, dim)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, attn_dropout: float, rotary: bool):
        super().__init__()
        self.ln_attn = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, attn_dropout, dropout, rotary)
        self.ln_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp(self.ln_mlp(x))


class TransformerLM(nn.Module):
    """forward(tokens (batch, time), state) -> (logits (batch, time, vocab), state).

    The state is the last `memory_len` tokens (batch, <=memory_len) seen: they are prepended as
    context (recomputed, not cached) and only the new positions are scored. memory_len=0 means
    independent windows; evaluation sets it to `context - stride` to get a sliding window."""

    def __init__(self, vocab_size: int, emb_dim: int = 512, layers: int = 8, heads: int = 8,
                 ff_dim: int = 2048, dropout: float = 0.1, attn_dropout: float = 0.1,
                 dropout_emb: float = 0.0, positions: str = "rotary", max_len: int = 512,
                 tie_weights: bool = True, memory_len: int = 0):
        super().__init__()
        self.positions, self.max_len, self.memory_len = positions, max_len, memory_len
        self.dropout_emb, self.scale = dropout_emb, math.sqrt(emb_dim)
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        if dropout_emb > 0:
            # A dropped word becomes this learned vector, not zeros: with rotary positions nothing else
            # is added, so a zero first word of a window keeps its residual stream zero through every
            # block, and LayerNorm of a zero vector multiplies its gradient by 1/sqrt(eps) ~ 316 per norm
            # (the clipped update of the whole batch shrinks to nothing; fp16 overflows).
            self.dropped_word = nn.Parameter(torch.empty(emb_dim))
        if positions == "learned":
            self.position_embedding = nn.Parameter(torch.zeros(max_len, emb_dim))
            nn.init.normal_(self.position_embedding, std=0.02)
        elif positions == "sinusoidal":
            self.register_buffer("position_table", sinusoidal_table(max_len, emb_dim), persistent=False)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(emb_dim, heads, ff_dim, dropout, attn_dropout, positions == "rotary")
                                    for _ in range(layers))
        self.ln_final = nn.LayerNorm(emb_dim)
        self.decoder = nn.Linear(emb_dim, vocab_size, bias=False)
        self.apply(self._init)
        nn.init.normal_(self.embedding.weight, std=emb_dim ** -0.5)  # unit scale after * sqrt(dim)
        if dropout_emb > 0:
            nn.init.normal_(self.dropped_word, std=emb_dim ** -0.5)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        for block in self.blocks:  # GPT-2: residual projections scaled down with depth
            for proj in (block.attn.out, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None):
        new_len = tokens.size(1)
        if state is not None:
            tokens = torch.cat([state, tokens], dim=1)
        length = tokens.size(1)
        if self.positions != "rotary" and length > self.max_len:
            raise ConfigError(f"a window of {length} tokens exceeds model.max_len={self.max_len} "
                              f"({self.positions} positions); raise model.max_len or shorten the context")
        if self.training and self.dropout_emb > 0:  # whole words, as embedding_dropout, replaced (see __init__)
            weight = self.embedding.weight
            dropped = weight.new_empty(weight.size(0), 1).bernoulli_(self.dropout_emb).bool()
            x = F.embedding(tokens, torch.where(dropped, self.dropped_word, weight)) * self.scale
        else:
            x = self.embedding(tokens) * self.scale
        if self.positions == "learned":
            x = x + self.position_embedding[:length]
        elif self.positions == "sinusoidal":
            x = x + self.position_table[:length]
        x = self.input_dropout(x)
        for block in self.blocks:
            x = block(x)
        logits = self.decoder(self.ln_final(x[:, length - new_len:]))
        new_state = tokens[:, max(0, length - self.memory_len):] if self.memory_len else None
        return logits, new_state
