"""The VAE objective, in nats per image.

    -ELBO(x) = E_q[-log p(x|z)] + KL(q(z|x) || p(z))
             = BCE(x, decoder(z)) summed over pixels + closed-form Gaussian KL,   z = mu + sigma * eps

Training may weight the KL term (beta, linear warm-up from 0) and give each latent dimension a
free-bits floor; the reported -ELBO always uses weight 1 and no floor, so it stays a bound on -log p(x).
The importance-weighted estimate (Burda et al. 2016, IWAE bound with k samples) is a tighter bound:
    -log p(x) <= -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x) <= -ELBO(x)   (in expectation).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def bernoulli_nll(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) = binary cross-entropy with logits summed over pixels: (batch, ...) -> (batch,)."""
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), images.float(), reduction="none")
    return per_pixel.flatten(1).sum(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent dimension, closed form: (batch, latent_dim)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def kl_weight(step: int, beta: float, warmup_steps: int) -> float:
    """beta, reached linearly from 0 over the first `warmup_steps` optimizer steps (0: no warm-up)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)


def training_loss(logits, images, mu, logvar, weight: float, free_bits: float = 0.0):
    """Batch-mean loss to minimise, and the per-image BCE and KL (batch,) for logging.

    free_bits > 0: each latent dimension's batch-averaged KL counts as at least `free_bits` nats
    (Kingma et al. 2016), so the optimiser gains nothing by collapsing a dimension below it."""
    bce = bernoulli_nll(logits, images)
    kl_per_dim = gaussian_kl(mu, logvar)
    if free_bits > 0:
        kl_term = kl_per_dim.mean(0).clamp(min=free_bits).sum()
    else:
        kl_term = kl_per_dim.sum(1).mean()
    return bce.mean() + weight * kl_term, bce, kl_per_dim.sum(1)


def log_importance_weights(model, images: torch.Tensor, num_samples: int,
                           generator: torch.Generator | None = None, max_rows: int = 20_000) -> torch.Tensor:
    """log p(x, z_i) - log q(z_i|x) for z_i ~ q(z|x), i = 1..num_samples: (num_samples, batch).
    Decodes at most `max_rows` images at a time to bound memory."""
    mu, logvar = model.encode(images)
    mu, logvar = mu.float(), logvar.float()
    std = torch.exp(0.5 * logvar)
    per_chunk = max(1, max_rows // len(images))
    chunks = []
    for start in range(0, num_samples, per_chunk):
        count = min(per_chunk, num_samples - start)
        eps = torch.randn((count, *mu.shape), generator=generator, device=mu.device)
        z = mu + std * eps                                                   # (count, batch, latent)
        log_q = (-0.5 * (eps.pow(2) + logvar + LOG_2PI)).sum(-1)
        log_prior = (-0.5 * (z.pow(2) + LOG_2PI)).sum(-1)
        logits = model.decode(z.flatten(0, 1))
        repeated = images.unsqueeze(0).expand(count, *images.shape).flatten(0, 1)
        log_likelihood = -bernoulli_nll(logits, repeated).view(count, len(images))
        chunks.append(log_likelihood + log_prior - log_q)
    return torch.cat(chunks)


def importance_weighted_nll(log_weights: torch.Tensor) -> torch.Tensor:
    """-log mean_i exp(log_weights[i]): the k-sample estimate of -log p(x), (k, batch) -> (batch,)."""
    return -(torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0]))
