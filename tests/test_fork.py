"""Multimodal prediction through a latent (pyebm.examples.fork): without a latent the prediction is the blurry average
of the two futures; a choice of two predicts one branch each; a continuous latent as large as the future collapses the
energy."""

import pytest
import torch

import pyebm
from pyebm.examples import fork
from pyebm.train import LatentFreeEnergy, fit, latent_free_energy_loss

INF = float("inf")


@pytest.fixture
def data(float64):
    return fork.sample(2000, seed=0), fork.sample(500, seed=1)


def _train(latent_dim, latent, data, steps=800):
    torch.manual_seed(0)
    model = fork.LatentPredictor(8, latent_dim)
    fit(model, data, "free_energy", latent=latent, steps=steps, lr=3e-3, lr_decay=0.05, seed=0, progress=False)
    return model


def test_without_a_latent_the_prediction_is_the_blurry_average(data):
    # A choice of one is no latent: E = ½|y - f(x)|², whose minimiser is E[y | x] = 0 (the branches are ±b(x)), so
    # the distance to the nearer branch is the branch's own norm; SGD leaves a few hundredths.
    (x, y), (xt, _) = data
    model = _train(1, torch.eye(1), (x, y))
    with torch.no_grad():
        prediction = model.predict(xt, torch.ones(1))
    branch_norm = fork.branches(xt)[0].norm(dim=-1)
    assert float(prediction.norm(dim=-1).mean()) < 0.1
    assert abs(float(fork.nearest_branch_distance(xt, prediction).mean() - branch_norm.mean())) < 0.1
    assert float(branch_norm.mean()) > 1.0  # the average is far from both futures


def test_a_choice_of_two_predicts_one_branch_each_and_keeps_the_average_high(data):
    (x, y), (xt, yt) = data
    model = _train(2, torch.eye(2), (x, y))
    with torch.no_grad():
        futures = torch.stack([model.predict(xt, z) for z in torch.eye(2)])  # (2, n, T)
        true = fork.branches(xt)
        to_branch = (futures[:, None] - true[None]).norm(dim=-1).mean(-1)  # [choice, branch]
        # one choice per branch, each within 0.15 (the noise-free branches; the data's noise has norm 0.14)
        assert float(torch.minimum(to_branch[0, 0] + to_branch[1, 1], to_branch[0, 1] + to_branch[1, 0])) < 0.3
        energies = torch.stack([model(xt, yt, z) for z in torch.eye(2)])
        usage = (energies.argmin(0) == 0).double().mean()
        assert 0.4 < float(usage) < 0.6  # sampling z by its usage gives both futures, about equally
        F_data = pyebm.free_energy(lambda z: torch.stack([model(xt, yt, s.expand(len(xt), 2)) for s in z]),
                                   torch.eye(2), INF)
        F_average = pyebm.free_energy(
            lambda z: torch.stack([model(xt, torch.zeros_like(yt), s.expand(len(xt), 2)) for s in z]), torch.eye(2), INF)
    assert float(F_average.mean()) > 10 * float(F_data.mean())


def test_a_continuous_latent_as_large_as_the_future_collapses_the_energy(data):
    # With G(x) of full rank 8 every future is m(x) + G(x)z for some z: F_∞ = 0 everywhere, data or not; a 1-D
    # latent still leaves random futures high.
    (x, y), (xt, _) = data
    random_futures = torch.randn(500, 8, generator=torch.Generator().manual_seed(3))
    contrast = {}
    for d in (1, 8):
        model = _train(d, {"z": d}, (x, y), steps=150)
        with torch.no_grad():
            contrast[d] = float(latent_free_energy_loss(model, (xt, random_futures), {"z": d}))
    assert contrast[8] < 1e-8
    assert contrast[1] > 0.5


def test_latent_free_energy_refuses_a_missing_latent_and_bad_settings():
    with pytest.raises(ValueError, match="needs `latent`"):
        LatentFreeEnergy()
    with pytest.raises(ValueError, match="beta"):
        LatentFreeEnergy(latent=torch.eye(2), beta=0.0)
    with pytest.raises(ValueError, match="penalty"):
        fork.LatentPredictor(penalty=-1.0)
