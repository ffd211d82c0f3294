"""Greedy decoding and batched beam search over any decoder with the step interface
(prepare_memory / init_state / step, see models/attention_lstm.py).

Beam search keeps the beams of every image of the batch in one (B*K, ...) tensor, the K beams of an
image in adjacent rows: one decoder call per time step for the whole batch, no per-image Python loop,
and the image features (memory) stay (B, ...), never copied per beam. A hypothesis that emitted
<end> stays in the beam with its score frozen (it can only be continued by <pad> at zero cost), so
finished and unfinished hypotheses compete for the K places. At the end each image's hypotheses are ranked by
    score / length ** length_penalty
(0: total log-probability; 1: mean log-probability per token, which favours longer captions).
"""
from __future__ import annotations

import dataclasses

import torch

from common.config import bounded


@dataclasses.dataclass
class DecodeConfig:
    beam_size: int = bounded(5, ge=1)           # 1: greedy
    length_penalty: float = bounded(0.0, ge=0)  # hypotheses ranked by log-prob / length ** length_penalty
    max_len: int = bounded(30, ge=1)            # generated tokens at most (including <end>)
    batch_size: int = bounded(64, ge=1)         # images decoded at once


@dataclasses.dataclass
class Decoded:
    tokens: torch.Tensor    # (B, L) generated ids, <end> included, <pad> after it
    lengths: torch.Tensor   # (B,) tokens generated (including <end>)
    scores: torch.Tensor    # (B,) total log-probability
    alphas: torch.Tensor    # (B, L, P) attention weights at each generated token


def _expand(tree: dict, times: int) -> dict:
    return {k: v.repeat_interleave(times, dim=0) for k, v in tree.items()}


def _select(tree: dict, index: torch.Tensor) -> dict:
    return {k: v.index_select(0, index) for k, v in tree.items()}


@torch.no_grad()
def beam_search(decoder, features: torch.Tensor, start_id: int, end_id: int, pad_id: int,
                beam_size: int = 5, max_len: int = 30, length_penalty: float = 0.0,
                banned_ids: tuple[int, ...] = ()) -> Decoded:
    """features (B, P, D) -> the best hypothesis per image. `banned_ids` (e.g. <start>, <pad>)
    are never generated. beam_size=1 is greedy decoding."""
    batch, k = features.size(0), beam_size
    # The memory keeps one row per image; the decoder maps the K beam rows of an image onto it.
    memory = decoder.prepare_memory(features)
    state = _expand(decoder.init_state(memory), k)
    device = features.device
    tokens = torch.full((batch * k,), start_id, dtype=torch.long, device=device)
    # Only beam 0 is live at the start, so the first expansion does not repeat K copies of itself.
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=device)
    steps = []   # (tokens, parent, alpha) per step; the best hypotheses are traced back at the end
    image_offset = (torch.arange(batch, device=device) * k).unsqueeze(1)
    banned = list(banned_ids)
    for _ in range(max_len):
        logits, state, alpha = decoder.step(tokens, state, memory)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        vocab = log_probs.size(-1)
        if banned:
            log_probs[:, banned] = float("-inf")
        log_probs.masked_fill_(finished.unsqueeze(1), float("-inf"))
        log_probs[:, pad_id].masked_fill_(finished, 0.0)
        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        scores, flat_choice = candidates.topk(k, dim=1)                        # (B, K)
        parent = (image_offset + flat_choice // vocab).view(-1)                # (B*K,) rows of the old beams
        tokens = (flat_choice % vocab).view(-1)
        state = _select(state, parent)
        steps.append((tokens, parent, alpha))
        was_finished = finished.index_select(0, parent)
        lengths = lengths.index_select(0, parent) + (~was_finished).long()
        finished = was_finished | (tokens == end_id)
        if bool((finished | torch.isinf(scores.view(-1))).all()):
            break
    ranking = scores / lengths.view(batch, k).clamp(min=1).float() ** length_penalty
    best = image_offset.squeeze(1) + ranking.argmax(dim=1)                   # (B,)
    row, best_tokens, best_alphas = best, [], []
    for step_tokens, step_parent, step_alpha in reversed(steps):
        best_tokens.append(step_tokens.index_select(0, row))
        row = step_parent.index_select(0, row)
        best_alphas.append(step_alpha.index_select(0, row))   # alpha was computed on the parent's row
    return Decoded(torch.stack(best_tokens[::-1], dim=1), lengths.index_select(0, best),
                   scores.view(-1).index_select(0, best), torch.stack(best_alphas[::-1], dim=1))


@torch.no_grad()
def greedy_decode(decoder, features: torch.Tensor, start_id: int, end_id: int, pad_id: int,
                  max_len: int = 30, banned_ids: tuple[int, ...] = ()) -> Decoded:
    """features (B, P, D) -> the most probable token at each step, until <end> or max_len."""
    memory = decoder.prepare_memory(features)
    state = decoder.init_state(memory)
    batch = features.size(0)
    tokens = torch.full((batch,), start_id, dtype=torch.long, device=features.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=features.device)
    lengths = torch.zeros(batch, dtype=torch.long, device=features.device)
    scores = torch.zeros(batch, device=features.device)
    generated, alphas = [], []
    for _ in range(max_len):
        logits, state, alpha = decoder.step(tokens, state, memory)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        if banned_ids:
            log_probs[:, list(banned_ids)] = float("-inf")
        best_log_prob, tokens = log_probs.max(dim=-1)
        tokens = tokens.masked_fill(finished, pad_id)
        scores += best_log_prob.masked_fill(finished, 0.0)
        lengths += (~finished).long()
        generated.append(tokens)
        alphas.append(alpha)
        finished = finished | (tokens == end_id)
        if bool(finished.all()):
            break
    return Decoded(torch.stack(generated, dim=1), lengths, scores, torch.stack(alphas, dim=1))


@torch.no_grad()
def decode_images(model, source, vocab, cfg: DecodeConfig, device, features_given: bool,
                  beam_size: int | None = None, limit: int = 0) -> tuple[list[str], list[torch.Tensor]]:
    """Caption every image of an ImageSource (the first `limit` if > 0) -> (captions, attention
    maps (length, P) per image). beam_size overrides cfg.beam_size (1: greedy)."""
    from captioning.data import normalize_images
    beam_size = cfg.beam_size if beam_size is None else beam_size
    count = min(limit, len(source)) if limit else len(source)
    model.eval()
    captions, alphas = [], []
    special = dict(start_id=vocab.start, end_id=vocab.end, pad_id=vocab.pad, max_len=cfg.max_len,
                   banned_ids=(vocab.start, vocab.pad))
    for first in range(0, count, cfg.batch_size):
        batch = torch.stack([source[i] for i in range(first, min(first + cfg.batch_size, count))]).to(device)
        features = batch if features_given else model.encode(normalize_images(batch))
        if beam_size == 1:
            out = greedy_decode(model.decoder, features, **special)
        else:
            out = beam_search(model.decoder, features, beam_size=beam_size,
                              length_penalty=cfg.length_penalty, **special)
        for tokens, length, alpha in zip(out.tokens.cpu(), out.lengths.cpu(), out.alphas.float().cpu()):
            captions.append(vocab.decode(tokens))
            alphas.append(alpha[:int(length)])
    return captions, alphas
