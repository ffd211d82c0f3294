"""The fp16 loss scaling of common/device.py `grad_scaler`, exercised on CPU with fp16 autocast:
an overflowing gradient skips the optimizer step and halves the scale; `growth_interval` good steps
in a row double it."""
import math

import torch
import torch.nn as nn

from common.device import autocast, grad_scaler

CPU = torch.device("cpu")
SMALL_INPUTS = torch.full((2, 4), 0.1)     # gradients <= 0.04: fit in fp16 even times the scale 2**17
HUGE_INPUTS = torch.full((2, 4), 1000.0)    # gradients ~4e5: beyond fp16's 65504 at any scale


def tiny_model():
    model = nn.Linear(4, 2)
    nn.init.constant_(model.weight, 0.1)
    nn.init.zeros_(model.bias)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def train_step(model, optimizer, scaler, inputs) -> float:
    """One update as the train.py files take it: autocast forward, fp32 loss, scaled backward,
    unscale, clip, step, update. Returns the gradient norm (inf or NaN after an overflow)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(CPU, torch.float16):
        outputs = model(inputs)
    loss = outputs.float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    return grad_norm.item()


def test_scaler_is_on_for_fp16_only():
    assert grad_scaler(CPU, torch.float16).is_enabled()
    assert not grad_scaler(CPU, torch.bfloat16).is_enabled()  # bf16 has fp32's range: nothing to scale
    assert not grad_scaler(CPU, None).is_enabled()


def test_overflow_skips_the_step_and_halves_the_scale():
    model, optimizer = tiny_model()
    scaler = grad_scaler(CPU, torch.float16)
    before = [p.detach().clone() for p in model.parameters()]
    grad_norm = train_step(model, optimizer, scaler, HUGE_INPUTS)
    assert not math.isfinite(grad_norm)  # the fp16 backward overflowed
    assert scaler.get_scale() == 2.0 ** 15
    for old, new in zip(before, model.parameters()):
        torch.testing.assert_close(new, old, rtol=0, atol=0)
    assert not optimizer.state  # skipped before the optimizer ran: no momentum buffer either
    grad_norm = train_step(model, optimizer, scaler, SMALL_INPUTS)
    assert math.isfinite(grad_norm)
    assert scaler.get_scale() == 2.0 ** 15
    assert not torch.equal(model.weight, before[0])  # a good step is taken


def test_good_steps_in_a_row_double_the_scale():
    model, optimizer = tiny_model()
    scaler = grad_scaler(CPU, torch.float16)
    scaler.set_growth_interval(3)
    for _ in range(2):
        train_step(model, optimizer, scaler, SMALL_INPUTS)
    assert scaler.get_scale() == 2.0 ** 16
    train_step(model, optimizer, scaler, SMALL_INPUTS)
    assert scaler.get_scale() == 2.0 ** 17
    # an overflow halves the scale and restarts the count
    for inputs, expected_scale in ((SMALL_INPUTS, 2.0 ** 17), (HUGE_INPUTS, 2.0 ** 16), (SMALL_INPUTS, 2.0 ** 16),
                                   (SMALL_INPUTS, 2.0 ** 16), (SMALL_INPUTS, 2.0 ** 17)):
        train_step(model, optimizer, scaler, inputs)
        assert scaler.get_scale() == expected_scale
