"""The reference energies' closed forms against independent grid normalisation (trapezoid rule in float64)."""

import math

import pytest
import torch

from pyebm import energies as Z

# Closed forms versus an 801x801 grid: the grid is spectrally accurate for these smooth densities, so
# agreement to 1e-6 in log Z and moments would fail for any wrong constant, sign or factor of β.
# (The funnel's neck is too narrow for a regular grid; it is checked by quadrature over v below.)
CASES = [
    (Z.Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([[2.0, 0.6], [0.6, 1.0]])), [0.5, 1.0, 3.0]),
    (Z.Banana(s=1.0, b=0.5), [0.5, 1.0, 2.0]),
    (Z.Banana(s=0.7, b=1.0), [1.0]),
    (Z.Ring(radius=2.0, width=0.3), [0.5, 1.0, 2.0]),
    (Z.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]]), scale=0.7), [1.0]),
    (Z.DoubleWell(dim=2, height=1.0), [0.5, 1.0, 3.0]),
    (Z.PhiFour(n=2, coupling=1.5, quartic=1.0, mass=0.3), [0.5, 1.0, 2.0]),  # the transfer matrix, Tr T^2
]


@pytest.mark.parametrize("energy, betas", CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_closed_forms_match_the_grid(energy, betas):
    for beta in betas:
        grid = energy.grid(beta)
        assert energy.log_normalizer(beta) == pytest.approx(grid.log_normalizer, abs=1e-6)
        torch.testing.assert_close(energy.mean(beta).double(), grid.mean(), atol=2e-6, rtol=0)
        torch.testing.assert_close(energy.covariance(beta).double(), grid.covariance(), atol=2e-6, rtol=1e-6)


def test_gaussian_covariance_and_precision_agree():
    cov = torch.tensor([[1.0, 0.3], [0.3, 2.0]], dtype=torch.float64)
    a = Z.Gaussian(torch.zeros(2, dtype=torch.float64), covariance=cov)
    b = Z.Gaussian(torch.zeros(2, dtype=torch.float64), torch.linalg.inv(cov))
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a(x), b(x))
    assert a.log_normalizer() == pytest.approx(math.log(2 * math.pi) + 0.5 * math.log(float(torch.det(cov))))


def test_energies_are_batched():
    x = torch.randn(4, 3, 2)
    for energy, _ in CASES:
        assert energy(x.to(torch.get_default_dtype())).shape == (4, 3)


@pytest.mark.parametrize("beta", [0.8, 1.0, 1.3])
def test_funnel_closed_form_matches_a_1d_quadrature_over_v(beta):
    # integrate the x's out analytically per v (Gaussian), then v numerically: an independent route
    f = Z.Funnel(dim=5, scale=3.0)
    v = torch.linspace(-60, 60, 600001, dtype=torch.float64)
    log_w = -beta * (v**2 / 18 + (f.dim - 1) * v / 2) + (f.dim - 1) * 0.5 * torch.log(2 * math.pi * torch.exp(v) / beta)
    log_z = float(torch.logsumexp(log_w, 0) + math.log(float(v[1] - v[0])))
    p = torch.softmax(log_w, 0)
    mean_v = float((p * v).sum())
    assert f.log_normalizer(beta) == pytest.approx(log_z, abs=1e-8)
    assert float(f.mean(beta)[0]) == pytest.approx(mean_v, abs=1e-8)
    cov = f.covariance(beta)
    assert float(cov[0, 0]) == pytest.approx(float((p * (v - mean_v) ** 2).sum()), rel=1e-8)
    assert float(cov[1, 1]) == pytest.approx(float((p * torch.exp(v)).sum()) / beta, rel=1e-8)


@pytest.mark.parametrize("bad", [dict(mean=[0.0, 0.0]), dict(mean=[0.0], precision=[[-1.0]])])
def test_gaussian_bad_input(bad):
    with pytest.raises(ValueError):
        Z.Gaussian(**bad)


def test_phi_four_transfer_matrix_is_converged_and_orders_with_coupling():
    chain = Z.PhiFour(n=16, coupling=4.0)
    fine = Z.PhiFour(n=16, coupling=4.0)
    fine.grid_points = 2401
    assert chain.log_normalizer(0.7) == pytest.approx(fine.log_normalizer(0.7), abs=1e-9)
    cov = chain.covariance()
    assert torch.allclose(cov, cov.T) and cov[0, 8] > 0.6 * cov[0, 0]  # sites half a ring apart still align
    assert Z.PhiFour(n=16, coupling=0.1).covariance()[0, 8] < 0.01  # weak coupling: independent wells
    with pytest.raises(ValueError, match="n must be"):
        Z.PhiFour(n=1)
