"""The captioning model: an image encoder and a caption decoder, built from the config."""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn as nn

from captioning.models.attention_lstm import AttentionLSTMDecoder
from captioning.models.encoder import EncoderConfig, ImageEncoder
from captioning.models.transformer import TransformerDecoder
from common.config import bounded


@dataclasses.dataclass
class DecoderConfig:
    kind: Literal["attention_lstm", "transformer"] = "attention_lstm"
    embed_dim: int = bounded(512, ge=1)      # word embedding (the transformer's d_model)
    hidden_dim: int = bounded(512, ge=1)     # LSTM state
    attention_dim: int = bounded(512, ge=1)  # LSTM soft attention
    dropout: float = bounded(0.5, ge=0, lt=1)
    layers: int = bounded(3, ge=1)           # transformer only
    heads: int = bounded(8, ge=1)            # transformer only
    ff_dim: int = bounded(2048, ge=1)        # transformer only
    max_len: int = bounded(64, ge=1)         # transformer only: longest caption it can read (learned positions)


class CaptionModel(nn.Module):
    """images (B, 3, H, W) normalised -> encoder -> features (B, P, D) -> decoder -> logits, alphas.
    When the encoder is frozen and its features are cached, the loop feeds the features directly
    (`features_given=True`)."""

    def __init__(self, encoder: ImageEncoder, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder.frozen:   # a frozen encoder keeps its BatchNorm statistics
            self.encoder.eval()
        return self

    def forward(self, images_or_features, inputs, teacher_forcing_prob: float = 1.0, draw: str = "sample",
                features_given: bool = False):
        """-> logits (B, T, V), alphas (B, T, P). The encoder runs inside forward, so DDP
        synchronises the gradients of a fine-tuned encoder too."""
        features = images_or_features if features_given else self.encode(images_or_features)
        return self.decoder(features, inputs, teacher_forcing_prob, draw)


def build_model(encoder_cfg: EncoderConfig, decoder_cfg: DecoderConfig, vocab_size: int) -> CaptionModel:
    encoder = ImageEncoder(encoder_cfg)
    d = decoder_cfg
    if d.kind == "attention_lstm":
        decoder = AttentionLSTMDecoder(vocab_size, encoder.out_dim, d.embed_dim, d.hidden_dim,
                                       d.attention_dim, d.dropout)
    else:
        decoder = TransformerDecoder(vocab_size, encoder.out_dim, encoder.grid_size ** 2, d.embed_dim,
                                     d.heads, d.layers, d.ff_dim, d.dropout, d.max_len)
    return CaptionModel(encoder, decoder)
