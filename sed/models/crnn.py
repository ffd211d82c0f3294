"""The course's CRNN baseline (as in the DCASE2018 Task 4 baseline): conv blocks that pool the mel
axis away, a bidirectional GRU over time, frame-level sigmoid outputs, clip output by pooling."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sed.models.pooling import ClipPooling


class ConvBlock(nn.Module):
    """3x3 conv -> batch norm -> ReLU -> max-pool (time_pool, freq_pool) -> dropout."""

    def __init__(self, in_ch: int, out_ch: int, time_pool: int, freq_pool: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_ch)
        self.pool = nn.MaxPool2d((time_pool, freq_pool), ceil_mode=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.pool(F.relu(self.norm(self.conv(x)))))


class GatedConvBlock(nn.Module):
    """Context gating (gated linear units, as in the DCASE2018 Task 4 winner's CRNN): 3x3 conv -> batch
    norm for the features and for their gates, features * sigmoid(gates) instead of ReLU -> max-pool ->
    dropout. The gates learn which time-frequency regions to pass (e.g. the event, not the background)."""

    def __init__(self, in_ch: int, out_ch: int, time_pool: int, freq_pool: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 2 * out_ch, 3, padding=1, bias=False)  # features and gates
        self.norm = nn.BatchNorm2d(2 * out_ch)
        self.pool = nn.MaxPool2d((time_pool, freq_pool), ceil_mode=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.pool(F.glu(self.norm(self.conv(x)), dim=1)))


class CRNN(nn.Module):
    """log-mels (batch, time, n_mels) -> frame_probs (batch, time, classes), clip_probs (batch, classes).

    Time pooling in the conv blocks (time_pool > 1) is undone by linear interpolation of the frame
    probabilities, so frame_probs always has the input's frame hop."""

    def __init__(self, n_mels: int, n_classes: int, conv_channels=(64, 64, 64), freq_pool=(4, 4, 4),
                 time_pool=(1, 1, 1), rnn_hidden: int = 64, rnn_layers: int = 2, dropout: float = 0.2,
                 pooling: str = "linear_softmax", block=ConvBlock):
        super().__init__()
        if not len(conv_channels) == len(freq_pool) == len(time_pool):
            raise ValueError("conv_channels, freq_pool and time_pool need one entry per block")
        blocks, in_ch, bands = [], 1, n_mels
        for out_ch, fp, tp in zip(conv_channels, freq_pool, time_pool):
            blocks.append(block(in_ch, out_ch, tp, fp, dropout))
            in_ch, bands = out_ch, -(-bands // fp)
        self.convs = nn.Sequential(*blocks)
        self.rnn = nn.GRU(in_ch * bands, rnn_hidden, num_layers=rnn_layers, batch_first=True,
                          bidirectional=True, dropout=dropout if rnn_layers > 1 else 0.0)
        self.classifier = nn.Linear(2 * rnn_hidden, n_classes)
        self.pooling = ClipPooling(pooling, 2 * rnn_hidden, n_classes)

    def forward(self, mels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_frames = mels.shape[1]
        x = self.convs(mels.unsqueeze(1))                  # (batch, channels, time', bands')
        x = x.permute(0, 2, 1, 3).flatten(2)               # (batch, time', channels * bands')
        hidden, _ = self.rnn(x)                            # (batch, time', 2 * rnn_hidden)
        if hidden.shape[1] != n_frames:                    # back to the input frame rate
            hidden = F.interpolate(hidden.transpose(1, 2), size=n_frames, mode="linear",
                                   align_corners=False).transpose(1, 2)
        frame_probs = torch.sigmoid(self.classifier(hidden).float()).clamp(1e-7, 1 - 1e-7)
        return frame_probs, self.pooling(frame_probs, hidden.float())
