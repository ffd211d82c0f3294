"""vae/loss.py and the reparameterisation: KL against torch.distributions, BCE by hand, gradients,
KL weight and free bits, and the importance-weighted bound against the ELBO."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.distributions import Normal, kl_divergence

from vae.loss import (
    bernoulli_nll,
    gaussian_kl,
    importance_weighted_nll,
    kl_weight,
    log_importance_weights,
    training_loss,
)
from vae.models import ModelConfig, build_model
from vae.models.vae import VAE


def test_closed_form_kl_matches_torch_distributions_and_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(6, 3), torch.randn(6, 3)
    std = torch.exp(0.5 * logvar)
    reference = kl_divergence(Normal(mu, std), Normal(0.0, 1.0))
    assert torch.allclose(gaussian_kl(mu, logvar), reference, atol=1e-6)
    z = Normal(mu, std).sample((100_000,))
    monte_carlo = (Normal(mu, std).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).mean(0)
    assert torch.allclose(gaussian_kl(mu, logvar), monte_carlo, atol=0.03)
    assert gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0  # q = prior


def test_bernoulli_nll_by_hand():
    images = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3))
    # logits 0 -> p = 1/2 for every pixel: -log p(x|z) = 784 log 2 whatever x is
    assert torch.allclose(bernoulli_nll(torch.zeros(3, 1, 28, 28), images), torch.full((3,), 784 * math.log(2)))
    logits = torch.randn(3, 1, 28, 28)
    p = torch.sigmoid(logits)
    by_hand = -(images * p.log() + (1 - images) * (1 - p).log()).sum((1, 2, 3))
    assert torch.allclose(bernoulli_nll(logits, images), by_hand, rtol=1e-5)


def test_gradients_reach_mu_and_logvar_but_not_the_noise():
    mu = torch.tensor([[0.5, -1.0]], requires_grad=True)
    logvar = torch.tensor([[0.2, -0.4]], requires_grad=True)
    torch.manual_seed(3)
    z = VAE.reparameterize(mu, logvar)
    torch.manual_seed(3)
    eps = torch.randn(1, 2)  # the same noise, drawn again
    assert torch.allclose(z, mu + torch.exp(0.5 * logvar) * eps)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones(1, 2))                                # dz/dmu = 1
    assert torch.allclose(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)  # dz/dlogvar
    # the loss of a whole model back-propagates into the encoder through mu and logvar
    model = build_model(ModelConfig(arch="mlp", latent_dim=2, hidden=[8]), (1, 28, 28))
    images = torch.bernoulli(torch.full((4, 1, 28, 28), 0.2))
    logits, mu, logvar = model(images)
    mu.retain_grad()
    logvar.retain_grad()
    training_loss(logits, images, mu, logvar, weight=1.0)[0].backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0
    assert model.encoder.net[1].weight.grad.abs().sum() > 0


def test_kl_weight_warm_up():
    assert kl_weight(0, 1.0, 0) == 1.0
    assert [kl_weight(s, 2.0, 4) for s in (0, 1, 2, 4, 100)] == [0.0, 0.5, 1.0, 2.0, 2.0]


def test_training_loss_weights_and_free_bits():
    torch.manual_seed(1)
    logits, images = torch.randn(5, 1, 4, 4), torch.bernoulli(torch.full((5, 1, 4, 4), 0.5))
    mu = torch.tensor([[1.0, 0.01]]).repeat(5, 1).requires_grad_()
    logvar = torch.zeros(5, 2, requires_grad=True)
    loss, bce, kl = training_loss(logits, images, mu, logvar, weight=0.5)
    assert torch.allclose(kl, torch.full((5,), 0.5 * (1.0 + 0.01 ** 2)))
    assert torch.allclose(loss, bce.mean() + 0.5 * kl.mean())
    # dimension 1 has KL 5e-5 nats, below a 0.1-nat floor: it counts as 0.1 and gets no gradient
    loss, _, kl = training_loss(logits, images, mu, logvar, weight=1.0, free_bits=0.1)
    assert torch.allclose(loss, bce.mean() + 0.5 + 0.1)
    assert torch.allclose(kl, torch.full((5,), 0.5 * (1.0 + 0.01 ** 2)))  # reported KL is the true one
    loss.backward()
    assert mu.grad[:, 1].abs().max() == 0 and mu.grad[:, 0].abs().min() > 0


class _ConstantDecoder(nn.Module):
    """Ignores z: then log p(x) = log p(x|z) exactly, and every bound is tight when q = prior."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, z):
        return self.logits.expand(len(z), *self.logits.shape)


class _PriorEncoder(nn.Module):
    def forward(self, images):
        return torch.zeros(len(images), 4)  # mu = 0, logvar = 0 for a latent of 2


def test_importance_weighted_nll_is_exact_when_the_posterior_is_the_prior():
    logits = torch.randn(1, 28, 28)
    model = VAE(_PriorEncoder(), _ConstantDecoder(logits), latent_dim=2)
    images = torch.bernoulli(torch.full((3, 1, 28, 28), 0.4))
    log_weights = log_importance_weights(model, images, num_samples=7, generator=torch.Generator().manual_seed(0))
    assert log_weights.shape == (7, 3)
    exact = bernoulli_nll(logits.expand(3, 1, 28, 28), images)
    assert torch.allclose(importance_weighted_nll(log_weights), exact, atol=1e-4)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_importance_weighted_bound_is_tighter_than_the_elbo(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, latent_dim=3, hidden=[16], channels=[4, 8], fc_hidden=16),
                        (1, 28, 28))
    images = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    with torch.no_grad():
        log_weights = log_importance_weights(model, images, num_samples=64, generator=torch.Generator().manual_seed(1),
                                             max_rows=40)  # several chunks
        # with the same samples, -log mean exp(w) <= -mean(w) (Jensen): the k-sample bound is tighter
        assert (importance_weighted_nll(log_weights) <= -log_weights.mean(0)).all()
        # -mean(w) is a Monte Carlo -ELBO: it agrees with BCE + closed-form KL up to sampling noise
        mu, logvar = model.encode(images)
        z = model.reparameterize(mu.repeat(2000, 1), logvar.repeat(2000, 1))
        bce = bernoulli_nll(model.decode(z), images.repeat(2000, 1, 1, 1)).view(2000, 4).mean(0)
        neg_elbo = bce + gaussian_kl(mu, logvar).sum(1)
        assert torch.allclose(-log_weights.mean(0), neg_elbo, rtol=0.01)
        # and one sample gives back the ELBO's estimator: k = 1 is no tighter than the ELBO
        single = log_importance_weights(model, images, 1, torch.Generator().manual_seed(2))
        assert torch.allclose(importance_weighted_nll(single), -single[0])
