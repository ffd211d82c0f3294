"""Mean teacher (Tarvainen & Valpola, 2017) for clips without labels: the teacher is an exponential
moving average (EMA) of the student's weights, and a consistency loss pulls the student's outputs
towards the teacher's on every clip, labelled or not. Its weight ramps up, so that the consistency
with a still random teacher does not drown the supervised loss early on."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from common.config import ConfigError


def make_teacher(student: torch.nn.Module) -> torch.nn.Module:
    """A copy of the student that is never trained by the optimizer, only by ema_update."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float, step: int) -> None:
    """teacher = a * teacher + (1 - a) * student for every parameter, with a = min(decay, 1 - 1 / (step + 1)):
    at the first steps the teacher follows the student closely (a plain average of the weights so far)
    rather than its own random start. Buffers (batch-norm statistics) stay the teacher's own, kept by its
    forward passes in train mode, as in the authors' code. `step`: optimizer steps done, from 1."""
    a = min(decay, 1.0 - 1.0 / (step + 1))
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(a).add_(s.detach(), alpha=1.0 - a)


def sigmoid_rampup(step: int, rampup_steps: float) -> float:
    """exp(-5 (1 - t)^2) for t = step / rampup_steps in [0, 1], then 1 (Laine & Aila 2017, used by the
    mean-teacher paper): near 0.007 at the start, 1 at the end of the ramp."""
    if rampup_steps <= 0:
        return 1.0
    t = min(step / rampup_steps, 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def consistency_loss(student_frames, student_clips, teacher_frames, teacher_clips,
                     frame_weight: float = 1.0) -> torch.Tensor:
    """MSE between the student's and the teacher's probabilities, clip (batch, classes) plus frame_weight
    times frame (batch, time, classes), in fp32. The teacher's side is a target: no gradient flows into it."""
    clip_term = F.mse_loss(student_clips.float(), teacher_clips.detach().float())
    if frame_weight == 0:
        return clip_term
    return clip_term + frame_weight * F.mse_loss(student_frames.float(), teacher_frames.detach().float())


def judges_teacher(cfg) -> bool:
    """Whether a run is judged (valid mAP, best.pt, evaluate.py, pseudo-labels) by its mean teacher."""
    return cfg.train.method == "mean_teacher" and cfg.train.mean_teacher.evaluate == "teacher"


def judged_weights(cfg, state: dict, ckpt_path) -> dict:
    """The weights in checkpoint `state` that the run of config `cfg` is judged by: teacher or model."""
    if judges_teacher(cfg) and state.get("teacher") is None:
        raise ConfigError(f"{ckpt_path} holds no mean teacher (a supervised run's checkpoint), but its config "
                          f"judges the teacher (train.method=mean_teacher); judge its model instead "
                          f"(train.method=supervised or train.mean_teacher.evaluate=student)")
    return state["teacher" if judges_teacher(cfg) else "model"]
