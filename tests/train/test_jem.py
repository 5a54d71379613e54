"""A classifier as an energy over (input, label): its readings are exact (softmax = Gibbs over labels, log-sum-exp =
free energy), and JEM, which also trains the free energy of the input, recovers the class-conditional Gaussians that
cross-entropy alone cannot identify."""

import pytest
import torch
from torch import nn

import pyebm
from pyebm.energies import ClassifierEnergy
from pyebm.train import fit

MU = torch.tensor([[2.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)


class Quadratic(nn.Module):
    """Logits f_y(x) = -|x - μ_y|² / 2σ² + b_y: p(x, y) ∝ e^{f_y(x)} is a two-Gaussian mixture with shared σ."""

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor([[0.5, 0.5], [-0.5, 0.3]]))
        self.log_sigma = nn.Parameter(torch.tensor(0.5))
        self.b = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return -0.5 * ((x[:, None, :] - self.mu) ** 2).sum(-1) / torch.exp(2 * self.log_sigma) + self.b


@pytest.fixture
def classes(float64):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(2, (4000,), generator=g)
    return MU[y] + torch.randn(4000, 2, generator=g), y


def test_the_readings_of_a_classifier_energy_are_exact(float64):
    g = torch.Generator().manual_seed(1)
    net = nn.Linear(3, 4)
    energy = ClassifierEnergy(net)
    x, y = torch.randn(6, 3, generator=g), torch.randint(4, (6,), generator=g)
    logits = net(x)
    torch.testing.assert_close(energy(x, y), -logits[torch.arange(6), y])
    torch.testing.assert_close(energy.posterior(x, beta=2.5), torch.softmax(2.5 * logits, -1))
    torch.testing.assert_close(energy.free_energy(x, beta=2.0), -torch.logsumexp(2.0 * logits, -1) / 2.0)
    torch.testing.assert_close(energy(x), -torch.logsumexp(logits, -1))  # no label: the free energy at β = 1
    torch.testing.assert_close(energy.free_energy(x, beta=float("inf")), -logits.max(-1).values)
    assert torch.equal(energy.predict(x), logits.argmax(-1))
    with pytest.raises(ValueError, match="one integer label per input"):
        energy(x, y[:3])
    with pytest.raises(ValueError, match="beta"):
        energy.free_energy(x, beta=0.0)


def test_jem_recovers_the_class_conditional_gaussians(classes):
    # JEM maximises log p(x, y) of a model family that holds the truth (two unit Gaussians at ±(2, 0), equal
    # weights), so the means and σ are found: tolerance 0.1 / 0.05 for SGD, PCD's finite chains and the Langevin
    # step's bias (about h/4 = 2.5% on the variance). Cross-entropy alone sees only p(y | x), which fixes
    # (μ₁ - μ₀)/σ² and not the means themselves: there the same start stays far from them.
    x, y = classes
    jem, plain = ClassifierEnergy(Quadratic()), ClassifierEnergy(Quadratic())
    options = dict(k=20, step_size=0.1, buffer_size=1000, steps=600, batch_size=256, lr=0.03, lr_decay=0.05, seed=0,
                   progress=False)
    fit(jem, (x, y), "jem", **options)
    fit(plain, (x, y), "jem", generative=0.0, **options)
    with torch.no_grad():
        assert float((jem.net.mu - MU).abs().max()) < 0.1
        assert abs(float(jem.net.log_sigma.exp()) - 1.0) < 0.05
        assert float((plain.net.mu - MU).abs().max()) > 0.5
        # both classify: the Bayes decision boundary is x₀ = 0
        assert float((plain.predict(x) == y).double().mean()) > 0.97


def test_jem_refuses_unlabelled_data_and_an_energy_without_labels(classes):
    x, y = classes
    with pytest.raises(TypeError, match="pairs"):
        fit(ClassifierEnergy(Quadratic()), x, "jem", steps=1, progress=False)
    with pytest.raises(TypeError, match="energies"):
        fit(pyebm.energies.MLPEnergy(2), (x, y), "jem", steps=1, progress=False)
    with pytest.raises(ValueError, match="generative"):
        pyebm.train.JEM(generative=-1.0)
    with pytest.raises(ValueError, match="bounds"):
        pyebm.train.JEM(bounds=(1.0, 0.0))
