"""The VAE: an encoder giving q(z|x) = N(mu, diag(exp(logvar))), the reparameterisation trick, and a
decoder giving the logits of p(x|z) = Bernoulli(sigmoid(logits)) per pixel. The prior is N(0, I).
The loss lives in vae/loss.py; this module has no training logic."""
from __future__ import annotations

import torch
import torch.nn as nn


class VAE(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder = encoder  # (batch, 1, H, W) -> (batch, 2 * latent_dim)
        self.decoder = decoder  # (batch, latent_dim) -> (batch, 1, H, W) logits
        self.latent_dim = latent_dim

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, 1, H, W) -> mu, logvar, each (batch, latent_dim)."""
        mu, logvar = self.encoder(images).chunk(2, dim=-1)
        return mu, logvar

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I) drawn outside the graph: the sample is a
        differentiable function of mu and logvar, and no gradient flows into the noise."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(batch, latent_dim) -> pixel logits (batch, 1, H, W)."""
        return self.decoder(z)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """-> logits (batch, 1, H, W), mu and logvar (batch, latent_dim)."""
        mu, logvar = self.encode(images)
        return self.decode(self.reparameterize(mu, logvar, generator)), mu, logvar
