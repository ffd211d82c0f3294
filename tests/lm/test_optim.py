"""Schedules and the NT-ASGD trigger."""
import pytest
import torch

from lm.config import TrainConfig
from lm.optim import build_optimizer, lr_factor, should_start_averaging


def test_warmup_then_cosine_to_min_lr():
    cfg = TrainConfig(lr=1.0, schedule="cosine", warmup_steps=10, min_lr=0.1)
    f = lr_factor(cfg, total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)   # half-way through the decay
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_inverse_sqrt_after_warmup():
    f = lr_factor(TrainConfig(lr=1.0, schedule="inverse_sqrt", warmup_steps=100), total_steps=0)
    assert f(99) == pytest.approx(1.0) and f(400) == pytest.approx(0.5)


def test_ntasgd_trigger_waits_for_nonmonotone_valid_loss():
    """AWD-LSTM compares this epoch's loss with min(history[:-nonmono]) of the epochs before it."""
    assert not should_start_averaging([5.0, 4.0, 3.0, 2.9], nonmono=2)
    assert not should_start_averaging([5.0, 4.0, 3.0, 3.1, 3.2], nonmono=2)  # best of [5, 4] is 4
    assert should_start_averaging([5.0, 4.0, 3.0, 3.1, 3.2, 3.3], nonmono=2)  # best of [5, 4, 3] is 3
    assert not should_start_averaging([5.0, 5.1, 5.2], nonmono=2)  # too early to judge


def test_adamw_does_not_decay_vectors_and_counts_tied_weights_once():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 10))
    model[2].weight = model[0].weight
    groups = build_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.1, lr=1e-3), model).param_groups
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0
