"""Optimizers and learning-rate schedules of the `train:` section.

- sgd / ntasgd: plain SGD (lr 20-30 for LSTMs with clipping). ntasgd is Merity et al.'s
  non-monotonically triggered averaging: SGD until the valid loss has not improved on its best of
  more than `nonmono` epochs ago, then evaluate with the running average of the weights
  (torch.optim.swa_utils.AveragedModel, updated every step).
- adam / adamw: for Transformers, with warmup + cosine or inverse-sqrt decay (stepped per update).
- plateau: lr *= plateau_factor when the valid loss does not improve (stepped per epoch).
"""
from __future__ import annotations

import math

import torch


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = list({id(p): p for p in model.parameters()}.values())  # tied weights once
    if cfg.optimizer in ("sgd", "ntasgd"):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    # AdamW: no weight decay on biases, LayerNorm gains and other vectors
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=tuple(cfg.betas))


def lr_factor(cfg, total_steps: int):
    """Multiplier of the base lr after `step` updates, for the per-step schedules."""
    floor = cfg.min_lr / cfg.lr if cfg.lr else 0.0

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.schedule == "inverse_sqrt":
            return max(floor, math.sqrt(max(1, cfg.warmup_steps) / max(1, step)))
        return 1.0
    return factor


def build_scheduler(cfg, optimizer, total_steps: int):
    """(scheduler, steps_per_update): "step" schedulers advance every update, "epoch" ones get the
    valid loss once per epoch."""
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience,
            min_lr=cfg.min_lr), "epoch"
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps)), "step"


def should_start_averaging(valid_losses: list[float], nonmono: int) -> bool:
    """NT-ASGD's trigger (AWD-LSTM's main.py): `valid_losses` ends with this epoch's loss; averaging
    starts when it is worse than the best of the earlier epochs, leaving out the last `nonmono` of
    them, and there were more than `nonmono` earlier epochs."""
    earlier, latest = valid_losses[:-1], valid_losses[-1]
    return len(earlier) > nonmono and latest > min(earlier[:-nonmono])
