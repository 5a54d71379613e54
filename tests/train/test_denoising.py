"""Reconstruction energies against their closed forms on Gaussian data: the denoising autoencoder's optimum is the
posterior mean E[x | x + σε] (its vector field the σ²-scaled score that DSM fits), the masked model's is the
conditional mean E[x_i | x_-i]."""

import pytest
import torch

import pyebm
from pyebm.energies import DenoisingAutoencoder, MaskedReconstruction, MLPEnergy
from pyebm.train import dae_loss, dsm_loss, fit, masked_loss, random_masks

MU = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
SIGMA = 0.5


@pytest.fixture
def data(float64):
    g = torch.Generator().manual_seed(0)
    L = torch.randn(3, 3, generator=g)
    cov = L @ L.T / 3 + 0.3 * torch.eye(3)
    return MU + torch.randn(20000, 3, generator=g) @ torch.linalg.cholesky(cov).T


def test_linear_dae_learns_the_posterior_mean_and_the_noised_score(data):
    # r*(x) = μ + Σ(Σ + σ²I)⁻¹(x - μ) for the sample's Σ and μ; what is left is SGD jitter and the Monte Carlo error of
    # 1.5M noise draws, about 1e-3 on coefficients of order 0.5 (a DAE trained without noise would give A = I).
    dae = DenoisingAutoencoder(3, hidden=())
    fit(dae, data, "dae", sigma=SIGMA, steps=3000, lr=0.02, lr_decay=0.01, batch_size=512, seed=0, progress=False)
    cov, mean = torch.cov(data.T), data.mean(0)
    noised_precision = torch.linalg.inv(cov + SIGMA**2 * torch.eye(3))
    A_star = cov @ noised_precision
    with torch.no_grad():
        A, b = dae.net[0].weight, dae.net[0].bias
        assert float((A - A_star).abs().max()) < 0.01
        assert float((b - (mean - A_star @ mean)).abs().max()) < 0.01
        # the vector field over σ² is the score of the noised density, -(Σ + σ²I)⁻¹(x - μ): DSM's answer
        x = data[:100]
        assert torch.allclose(dae.score(x, SIGMA), -(x - mean) @ noised_precision, atol=0.05)


def test_the_dae_loss_is_dsm_for_the_score_it_parameterises(float64):
    # With A symmetric, r(x) - x = (A - I)x + b is -∇E for E(x) = ½xᵀ(I - A)x - bᵀx; then the denoising loss is
    # σ² times DSM's (σ-weighted, without the control variate) for the score (r - x)/σ², draw by draw.
    g = torch.Generator().manual_seed(1)
    dae = DenoisingAutoencoder(3, hidden=())
    with torch.no_grad():
        M = torch.randn(3, 3, generator=g)
        dae.net[0].weight.copy_(0.5 * (M + M.T))
        dae.net[0].bias.copy_(torch.randn(3, generator=g))
    A, b = dae.net[0].weight.detach(), dae.net[0].bias.detach()
    sigma = 0.3

    def energy(x):  # the energy whose score is (r(x) - x)/σ²
        return (0.5 * ((x @ (torch.eye(3) - A)) * x).sum(-1) - x @ b) / sigma**2

    x, eps = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g)
    dae_value = dae_loss(dae, x, sigma, eps)
    dsm_value = dsm_loss(energy, x, sigma, eps, variance_reduction=False)
    assert torch.allclose(dae_value / sigma**2, dsm_value, rtol=1e-12)


def test_linear_masked_model_learns_the_conditional_means(data):
    # One coordinate hidden at a time: the optimum is E[x_i | x_-i] = μ_i - Σ_{j≠i} Λ_ij (x_j - μ_j) / Λ_ii for the
    # sample's precision Λ; tolerance as for the DAE above (a model ignoring the visible coordinates would give 0).
    model = MaskedReconstruction(3, hidden=())
    fit(model, data, "masked", steps=3000, lr=0.02, lr_decay=0.01, batch_size=512, seed=0, progress=False)
    precision = torch.linalg.inv(torch.cov(data.T))
    coef = -precision / precision.diagonal()[:, None]
    off = ~torch.eye(3, dtype=torch.bool)
    with torch.no_grad():
        W = model.net[0].weight[:, :3]
        assert float((W[off] - coef[off]).abs().max()) < 0.01
        mean = data.mean(0)
        x = data[:100]
        exact = mean + (x - mean) @ (coef * off).T
        # coefficient errors below 0.01 times |x - μ| up to about 4 on these points
        assert torch.allclose(model.conditional_means(x), exact, atol=0.05)


def test_masked_energy_of_the_exact_conditionals_is_the_pseudo_likelihood_quadratic(float64):
    # With the reconstruction set to the exact conditional means, E(x) = ½ Σ_i ((Λ(x - μ))_i / Λ_ii)².
    precision = torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.5, -0.4], [0.0, -0.4, 1.0]])
    coef = -precision / precision.diagonal()[:, None]
    off = ~torch.eye(3, dtype=torch.bool)
    model = MaskedReconstruction(3, hidden=())
    with torch.no_grad():
        model.net[0].weight.zero_()
        model.net[0].weight[:, :3] = coef * off
        model.net[0].bias.copy_(MU - (coef * off) @ MU)
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = 0.5 * (((x - MU) @ precision / precision.diagonal()) ** 2).sum(-1)
    assert torch.allclose(model(x), exact, rtol=1e-12)


def test_masked_loss_scores_only_the_hidden_coordinates(float64):
    model = MaskedReconstruction(4, hidden=())
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mask = random_masks(6, 4, 2, torch.Generator().manual_seed(4))
    assert mask.sum(1).tolist() == [2] * 6
    error = (model.reconstruct(x, mask) - x) ** 2
    assert torch.allclose(masked_loss(model, x, mask), 0.5 * error[mask].sum() / 6)


def test_reconstruction_objectives_refuse_what_they_cannot_train(float64):
    x = torch.randn(10, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="reconstruct"):
        fit(MLPEnergy(3), x, "dae", steps=1, progress=False)
    with pytest.raises(ValueError, match="count=4"):
        fit(MaskedReconstruction(3), x, "masked", count=4, steps=1, progress=False)
    with pytest.raises(ValueError, match="sigma"):
        pyebm.train.DAE(sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        DenoisingAutoencoder(3).score(x, 0.0)
    with pytest.raises(ValueError, match="coordinates"):
        MaskedReconstruction(3).reconstruct(torch.randn(2, 4), torch.ones(2, 4, dtype=torch.bool))
