"""The model zoo. Every model maps (tokens (batch, time), state) -> (logits (batch, time, vocab),
state), where the state carries context from one chunk of a stream to the next (hidden states for
RNNs, the previous tokens for the FFNN and the Transformer); None means "start of a stream"."""
from __future__ import annotations

import torch
import torch.nn as nn

from common.config import ConfigError
from lm.models.ffnn import FeedForwardLM
from lm.models.rnn import CELLS, RecurrentLM
from lm.models.transformer import TransformerLM

ARCHITECTURES = ("ffnn", *CELLS, "transformer")
MAX_PARAMETERS = 60_000_000  # the course's limit


def build_model(cfg, vocab_size: int) -> nn.Module:
    """`cfg`: the `model:` section (lm.config.ModelConfig)."""
    if cfg.arch == "ffnn":
        return FeedForwardLM(vocab_size, cfg.context_size, cfg.emb_dim, cfg.hidden, cfg.layers,
                             cfg.dropout, cfg.dropout_emb, cfg.tie_weights)
    if cfg.arch == "transformer":
        return TransformerLM(vocab_size, cfg.emb_dim, cfg.layers, cfg.heads, cfg.ff_dim, cfg.dropout,
                             cfg.attn_dropout, cfg.dropout_emb, cfg.positions, cfg.max_len,
                             cfg.tie_weights, cfg.memory_len)
    if cfg.tie_weights and cfg.layers == 1 and cfg.hidden != cfg.emb_dim:
        raise ConfigError(f"model.hidden={cfg.hidden} would have no effect: with model.tie_weights=true the "
                          f"last (here the only) layer has model.emb_dim={cfg.emb_dim} units; set "
                          f"model.hidden={cfg.emb_dim}, model.layers>=2 or model.tie_weights=false")
    return RecurrentLM(vocab_size, cfg.arch, cfg.emb_dim, cfg.hidden, cfg.layers, cfg.tie_weights,
                       cfg.dropout_emb, cfg.dropout_input, cfg.dropout_hidden, cfg.dropout, cfg.weight_drop)


def detach_state(state):
    """Cut the graph between chunks (truncated BPTT) while keeping the values."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


def model_name(cfg) -> str:
    """Short name for tables: `lstm 3x1150 emb400`, `transformer 8L d512 rotary`, `ffnn ctx4 h400`."""
    if cfg.arch == "ffnn":
        return f"ffnn ctx{cfg.context_size} h{cfg.hidden}"
    if cfg.arch == "transformer":
        return f"transformer {cfg.layers}L d{cfg.emb_dim} {cfg.positions}"
    return f"{cfg.arch} {cfg.layers}x{cfg.hidden} emb{cfg.emb_dim}"
