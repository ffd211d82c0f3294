"""Stability of the AR decoder, as switches and as measurements.

The known failures of VALL-E-style decoders (VALL-E 2, ELLA-V, RALL-E): the AR loops on a few codes,
skips words, or never emits its end token. The devices against them (synth.* switches):
- max_length_ratio: stop at this multiple of the expected length (below), not only at the fixed
  max_frames_per_token x text tokens;
- eos_boost: from the expected length on, the end token's logit gets eos_boost x (frames so far /
  expected frames - 1), a push to stop that grows with the overrun (models/valle.py generate_batch);
- ras_window / ras_ratio: repetition-aware sampling (VALL-E 2), in generate_batch.

The expected length comes from the training data: its frames per text token (all code frames over
all text tokens of the training cuts, `frames_per_token`, saved in the run folder as
frames_per_token.json). Text of N tokens is expected to take frames_per_token x N frames; the prompt
covers the first P of them, so N tokens after a P-frame prompt are expected to add
frames_per_token x N - P frames (at least one).

Measured per evaluation row (scoring.summarise): the share of syntheses cut at the length cap, the
share with a loop in their codebook-1 codes (`has_loop`), and the mean length / expected length.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from common.run import write_json


def frames_per_token(cuts, tokens) -> float:
    """All code frames / all text tokens of `cuts` (reads only the manifests, not the codes)."""
    frames = token_count = 0
    for cut in cuts:
        frames += cut.codes.shape[0]
        token_count += len(tokens.encode(cut.supervisions[0].text))
    return frames / max(token_count, 1)


def run_frames_per_token(run_dir: Path, cfg, tokens) -> float:
    """The training data's frames per token, from <run>/frames_per_token.json; a run trained before
    the file existed gets it computed from its configured training cuts (and saved)."""
    from common.config import resolve_path
    from valle_tts.data import load_cuts
    path = Path(run_dir) / "frames_per_token.json"
    if path.is_file():
        return json.loads(path.read_text())["frames_per_token"]
    cuts = load_cuts(resolve_path(cfg.data.manifest_dir), cfg.data.train_parts, cfg.data.train_hours)
    value = frames_per_token(cuts, tokens)
    write_json(path, {"frames_per_token": value, "train_parts": cfg.data.train_parts,
                      "train_hours": cfg.data.train_hours})
    return value


def expected_new_frames(frames_per_token: float, text_tokens: int, prompt_frames: int) -> float:
    """Frames the AR is expected to add after a `prompt_frames` prompt for text of `text_tokens`
    tokens (prompt transcript included), at least 1."""
    return max(1.0, frames_per_token * text_tokens - prompt_frames)


def new_frame_limit(scfg, text_tokens: int, prompt_frames: int, expected: float) -> int:
    """The AR's cap on new frames: max_frames_per_token x text tokens - prompt, and, with
    max_length_ratio > 0, max_length_ratio x the expected new frames, whichever is smaller."""
    limit = max(1, math.ceil(scfg.max_frames_per_token * text_tokens) - prompt_frames)
    if scfg.max_length_ratio:
        limit = min(limit, max(1, math.ceil(scfg.max_length_ratio * expected)))
    return limit


def has_loop(codes1: torch.Tensor, max_period: int, min_frames: int) -> bool:
    """True when (frames,) codes hold a stretch of at least `min_frames` frames that is one n-gram
    (n <= max_period) repeated back to back: codes[i] == codes[i + n] throughout, for at least
    two whole repeats."""
    codes1 = torch.as_tensor(codes1)
    for period in range(1, max_period + 1):
        if len(codes1) <= period:
            break
        same = (codes1[period:] == codes1[:-period]).int()
        # longest run of consecutive matches: the stretch is period + that run long
        run = best = 0
        for match in same.tolist():
            run = run + 1 if match else 0
            best = max(best, run)
        if best >= period and best + period >= min_frames:
            return True
    return False
