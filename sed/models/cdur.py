"""A CDur-style CRNN (Dinkel, Wu and Yu, "Towards duration robust weakly supervised sound event
detection", 2021): double-conv blocks with LP pooling that subsample time by 4, a wider BiGRU, and
outputs upsampled back to the input frame rate."""
from __future__ import annotations

import torch.nn as nn

from sed.models.crnn import CRNN


class DoubleConvBlock(nn.Module):
    """(BN -> 3x3 conv -> LeakyReLU) x 2 -> LP-pool (time_pool, freq_pool) -> dropout."""

    def __init__(self, in_ch: int, out_ch: int, time_pool: int, freq_pool: int, dropout: float):
        super().__init__()
        layers = []
        for i in range(2):
            layers += [nn.BatchNorm2d(in_ch if i == 0 else out_ch),
                       nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=False),
                       nn.LeakyReLU(0.1)]
        self.body = nn.Sequential(*layers)
        # L4 pooling sits between average (0 dB events survive) and max pooling (sharp onsets).
        self.pool = nn.LPPool2d(4, (time_pool, freq_pool), ceil_mode=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # In fp16, x**4 overflows above |x| = 16 and the backward of its 4th root overflows for small
        # windows (NaN gradients): pool in fp32, as CUDA autocast already does for pow, CPU's does not.
        return self.dropout(self.pool(self.body(x).float()))


def CDur(n_mels: int, n_classes: int, **kwargs) -> CRNN:
    """The CRNN frame with double-conv LP-pool blocks (time_pool e.g. [2, 2, 1] subsamples time by 4)."""
    return CRNN(n_mels, n_classes, block=DoubleConvBlock, **kwargs)
