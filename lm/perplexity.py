"""Perplexity = exp(total negative log-likelihood / number of tokens), over every token of a split.

Each token of the file is a target exactly once (lm.data.eval_chunks); the first one is predicted
from `<eos>`, as if a sentence had just ended. The model's state carries context along each of the
`rows` parallel streams, so a recurrent model sees the whole preceding text of its row. A
Transformer reads a sliding window: each chunk of `stride` new tokens is scored with the previous
`context - stride` tokens prepended, so every token after the first window has at least
`context - stride` tokens of context and no token is scored twice.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common.device import autocast
from lm.data import eval_chunks
from lm.models import TransformerLM


def chunking(model, bptt: int, context: int = 0, stride: int = 0) -> tuple[int, int]:
    """(chunk_len, memory_len) for evaluating `model`: bptt-long chunks with carried state for
    recurrent and feed-forward models; a window of `context` (default bptt) moving by `stride`
    (default context / 2) for the Transformer."""
    if not isinstance(model, TransformerLM):
        return bptt, 0
    context = context or bptt
    stride = stride or max(1, context // 2)
    return stride, context - stride


@torch.no_grad()
def stream_nll(model, stream: torch.Tensor, rows: int, chunk_len: int, memory_len: int = 0,
               device="cpu", amp=None) -> tuple[float, int]:
    """(summed NLL in nats, token count) of `stream` (tokens,) under `model` (see module doc)."""
    was_training, saved_memory = model.training, getattr(model, "memory_len", 0)
    model.eval()
    if isinstance(model, TransformerLM):
        model.memory_len = memory_len
    total, count, state = 0.0, 0, None
    try:
        for inputs, targets, mask in eval_chunks(stream, rows, chunk_len):
            inputs, targets, mask = inputs.to(device), targets.to(device), mask.to(device)
            with autocast(torch.device(device), amp):
                logits, state = model(inputs, state)
            nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
            total += nll[mask.flatten()].sum().item()
            count += int(mask.sum())
    finally:
        model.train(was_training)
        if isinstance(model, TransformerLM):
            model.memory_len = saved_memory
    return total, count


def perplexity(nll_sum: float, count: int) -> float:
    return math.exp(nll_sum / count)
