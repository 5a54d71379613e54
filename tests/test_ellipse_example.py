"""The ellipse learned two ways (pyebm.examples.ellipse): the helpers are exact, the 1-D-latent decoder recovers the
ellipse in any dimension, and a contrastive energy with random negatives loses it as the dimension grows."""

import math

import pytest
import torch

from pyebm.examples import ellipse


def test_distance_and_separation_are_exact(float64):
    # on the ellipse: 0; moved out of its plane by r: exactly r; 0.5 outside along the major axis: 0.5
    on = ellipse.sample(50, 8, noise=0.0, seed=1)
    assert float(ellipse.distance(on).abs().max()) < 1e-9
    Q = ellipse.embedding(8)
    normal = torch.linalg.qr(torch.cat([Q, torch.randn(8, 1, dtype=torch.float64)], 1))[0][:, 2]
    assert torch.allclose(ellipse.distance(on + 0.3 * normal), torch.full((50,), 0.3), atol=1e-9)
    assert math.isclose(float(ellipse.distance(torch.tensor([[2.5, 0.0]]))), 0.5, abs_tol=1e-9)
    off = ellipse.off_manifold(100, 8, 0.3, seed=2)
    assert float(ellipse.distance(off).max()) <= 0.3 + 1e-9
    # separation is an AUC: 1 when every off energy is higher, 0.5 for ties, 0 when every one is lower
    e = lambda x: x[:, 0]  # noqa: E731
    lo, hi = torch.zeros(5, 1), torch.ones(7, 1)
    assert ellipse.separation(e, lo, hi) == 1.0 and ellipse.separation(e, hi, lo) == 0.0
    assert ellipse.separation(e, lo, lo) == 0.5


@pytest.mark.slow
def test_the_angle_decoder_recovers_the_ellipse_in_32_dimensions(float64):
    # The decoder's one latent dimension makes its zero set a closed curve; F_∞ over 64 angles pulls that curve onto
    # the data. The noise (sd 0.02, in-plane) and the 64-angle grid leave about 0.01: tolerance 0.03.
    data = ellipse.sample(2000, 32, seed=0)
    decoder, f_inf, _ = ellipse.train_latent(data, steps=400)
    with torch.no_grad():
        curve = decoder.curve()
        assert float(ellipse.distance(curve).mean()) < 0.03  # the curve lies on the ellipse ...
        truth = ellipse.sample(500, 32, noise=0.0, seed=7)
        assert float(torch.cdist(truth, curve).min(1).values.mean()) < 0.03  # ... and covers all of it
    assert ellipse.separation(f_inf, truth, ellipse.off_manifold(500, 32, 0.3, seed=8)) > 0.99


@pytest.mark.slow
def test_a_contrastive_energy_with_random_negatives_loses_the_ellipse_in_32_dimensions():
    # NCE against isotropic Gaussian noise, the same budget in 2-D and 32-D (benchmarks/ellipse_dimension.py: 0.82 and
    # 0.55): in 32-D a negative lands within 0.3 of the ellipse with probability below 2e-35, and the energy cannot tell
    # on- from off-ellipse points (0.5 is blind); thresholds halfway-ish, 0.75 and 0.65.
    separation = {}
    for dim in (2, 32):
        data = ellipse.sample(4000, dim, seed=0)
        energy, _ = ellipse.train_contrastive(data, ratio=1, steps=1500, hidden=(128, 128))
        on, off = ellipse.sample(500, dim, noise=0.0, seed=7), ellipse.off_manifold(500, dim, 0.3, seed=8)
        separation[dim] = ellipse.separation(energy, on, off)
    assert separation[2] > 0.75
    assert separation[32] < 0.65
