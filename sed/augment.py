"""Batch augmentations for log-mels, each a config switch. Every random draw comes from the global
torch RNG in the main process, so a resumed run draws exactly what the uninterrupted run drew."""
from __future__ import annotations

import dataclasses

import torch

from sed.config import AugmentConfig


def time_shift(mels: torch.Tensor, max_frames: int) -> torch.Tensor:
    """Roll each clip of (batch, time, n_mels) by its own random shift in [-max_frames, max_frames]."""
    shifts = torch.randint(-max_frames, max_frames + 1, (len(mels),))
    return torch.stack([m.roll(int(s), dims=0) for m, s in zip(mels, shifts)])


def augment_batch(mels: torch.Tensor, targets: torch.Tensor, cfg: AugmentConfig):
    """mels (batch, time, n_mels) normalised; targets (batch, classes) -> augmented copies."""
    batch, n_frames, n_mels = mels.shape
    mels = mels.clone()
    if cfg.time_shift:  # weak labels do not change when the clip is rotated in time
        mels = time_shift(mels, cfg.time_shift_frames)
    if cfg.mixup:
        lam = torch.distributions.Beta(cfg.mixup_alpha, cfg.mixup_alpha).sample((batch,))
        partner = torch.randperm(batch)
        mels = lam[:, None, None] * mels + (1 - lam[:, None, None]) * mels[partner]
        targets = lam[:, None] * targets + (1 - lam[:, None]) * targets[partner]
    if cfg.spec_augment:  # masks are set to 0, the mean of the normalised features
        for axis, count, width, size in ((1, cfg.time_masks, cfg.time_mask_frames, n_frames),
                                         (2, cfg.freq_masks, cfg.freq_mask_bands, n_mels)):
            for _ in range(count):
                widths = torch.randint(0, width + 1, (batch,))
                starts = (torch.rand(batch) * (size - widths + 1)).long()
                positions = torch.arange(size)
                mask = (positions[None] >= starts[:, None]) & (positions[None] < (starts + widths)[:, None])
                mels = mels.masked_fill(mask[:, :, None] if axis == 1 else mask[:, None, :], 0.0)
    if cfg.noise:
        mels = mels + cfg.noise_std * torch.randn_like(mels)
    return mels, targets


def mean_teacher_views(mels: torch.Tensor, cfg: AugmentConfig, noise_std: float):
    """Two differently perturbed views of the same clips (batch, time, n_mels): the student's with the
    configured augmentation and its own Gaussian noise, the teacher's with other Gaussian noise. A time
    shift moves both views alike, so that their frames stay aligned for the frame consistency loss."""
    if cfg.time_shift:
        mels = time_shift(mels, cfg.time_shift_frames)
    no_labels = torch.zeros(len(mels), 0)
    student, _ = augment_batch(mels, no_labels, dataclasses.replace(cfg, time_shift=False))
    return student + noise_std * torch.randn_like(mels), mels + noise_std * torch.randn_like(mels)
