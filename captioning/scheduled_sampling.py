"""Scheduled sampling (Bengio et al. 2015): the probability of feeding the ground-truth token
(teacher forcing) decays over training, so the decoder learns to continue from its own outputs.

    p = teacher_forcing_prob(cfg, i)     # i = optimizer step or epoch (cfg.unit)
      linear:           max(min_prob, 1 - linear_slope * i)
      exponential:      max(min_prob, exponential_base ** i)          (base < 1)
      inverse_sigmoid:  max(min_prob, k / (k + exp(i / k)))            (k >= 1)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from common.config import bounded


@dataclasses.dataclass
class ScheduledSamplingConfig:
    schedule: Literal["none", "linear", "exponential", "inverse_sigmoid"] = "none"
    unit: Literal["step", "epoch"] = "step"   # i counts optimizer steps or finished epochs
    min_prob: float = bounded(0.0, ge=0, le=1)  # floor of the teacher-forcing probability
    linear_slope: float = bounded(1e-4, ge=0)  # linear: p drops by this much per unit
    exponential_base: float = bounded(0.9998, gt=0, le=1)  # exponential: p = base ** i
    inverse_sigmoid_k: float = bounded(2000.0, ge=1)  # inverse sigmoid: p = k / (k + exp(i / k))
    draw: Literal["sample", "argmax"] = "sample"   # how the model's own token is chosen


def teacher_forcing_prob(cfg: ScheduledSamplingConfig, i: int) -> float:
    if cfg.schedule == "none":
        return 1.0
    if cfg.schedule == "linear":
        p = 1.0 - cfg.linear_slope * i
    elif cfg.schedule == "exponential":
        p = cfg.exponential_base ** i
    else:
        k = cfg.inverse_sigmoid_k
        p = k / (k + math.exp(min(i / k, 700.0)))
    return max(cfg.min_prob, min(1.0, p))


def mix_in_predictions(gold: torch.Tensor, previous_logits: torch.Tensor, teacher_forcing_prob: float,
                       draw: str = "sample") -> torch.Tensor:
    """gold (B,) tokens, previous_logits (B, V) -> (B,) with each token replaced by the model's own
    prediction with probability 1 - teacher_forcing_prob. Draws from the global torch RNG (which a
    checkpoint restores), a fixed number of uniform draws per call so resume stays exact."""
    use_model = torch.rand(gold.shape, device=gold.device) >= teacher_forcing_prob
    if draw == "argmax":
        predicted = previous_logits.detach().argmax(dim=-1)
    else:
        probs = torch.softmax(previous_logits.detach().float(), dim=-1).reshape(-1, previous_logits.size(-1))
        predicted = torch.multinomial(probs, 1).view(gold.shape)
    return torch.where(use_model, predicted, gold)


def plot_schedule(cfg: ScheduledSamplingConfig, steps_per_epoch: int, epochs: int, path) -> None:
    """The teacher-forcing probability over the configured run, per epoch (a figure in the run
    folder: one look says whether the schedule decays within the run)."""
    import matplotlib  # heavy: only for this figure
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs_axis = [i / steps_per_epoch for i in range(0, epochs * steps_per_epoch + 1, max(1, steps_per_epoch // 20))]
    values = [teacher_forcing_prob(cfg, round(e * steps_per_epoch) if cfg.unit == "step" else int(e))
              for e in epochs_axis]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(epochs_axis, values)
    ax.set(xlabel="epoch", ylabel="teacher-forcing probability", ylim=(0, 1.02),
           title=f"scheduled sampling: {cfg.schedule} ({cfg.unit}s)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

