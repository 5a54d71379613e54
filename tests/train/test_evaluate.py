"""2-D targets are exact normalised densities with matching samplers; the evaluation scores the truth as perfect."""

import math

import pytest
import torch

from pyebm.energies import Checkerboard, EightGaussians, Rings, TwoMoons
from pyebm.train import evaluate_2d, mmd

TARGETS = [EightGaussians(), TwoMoons(), Rings(), Checkerboard()]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: type(t).__name__)
def test_targets_are_normalised_and_their_samplers_match_them(target, float64):
    assert abs(target.grid().log_normalizer) < 1e-8
    # E_p[-log p] = H[p]: the mean energy of 20000 draws matches the grid entropy within 4 standard errors
    x = target.sample(20000, seed=0)
    e = target(x)
    assert abs(float(e.mean()) - target.entropy()) < 4 * float(e.std()) / math.sqrt(len(e))


def test_rings_closed_form_matches_angular_quadrature(float64):
    rings = Rings()
    x = torch.tensor([[0.3, -1.1], [2.5, 0.4], [0.0, 0.0]])
    phi = torch.linspace(0, 2 * math.pi, 4001)[:-1]
    total = 0
    for r in rings.radii:
        c = r * torch.stack([phi.cos(), phi.sin()], -1)
        sq = ((x[:, None] - c) ** 2).sum(-1)
        total = total + torch.exp(-sq / (2 * rings.noise**2)).mean(1) / (2 * math.pi * rings.noise**2) / len(rings.radii)
    assert torch.allclose(rings.log_prob(x).exp(), total, rtol=1e-10)


def test_evaluation_scores_the_truth_as_perfect_and_a_wrong_density_as_not(float64):
    target = EightGaussians()
    test = target.sample(5000, seed=1)
    truth = evaluate_2d(target, target, test)
    assert abs(truth["kl"]) < 1e-6
    assert abs(truth["excess_nll"]) < 4 * truth["nll_se"]
    assert truth["mmd"] < 2e-3
    wrong = evaluate_2d(EightGaussians(scale=0.45), target, test)
    assert wrong["kl"] > 0.1 and wrong["excess_nll"] > 0.1 and wrong["mmd"] > truth["mmd"]


def test_mmd_is_zero_for_one_distribution_and_positive_for_two():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g)
    assert abs(mmd(a, b)) < 3e-3
    assert mmd(a + 0.5, b) > 0.02
