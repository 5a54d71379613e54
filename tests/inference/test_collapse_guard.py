"""SVI refuses to optimise learnable parameters inside an energy factor (the ELBO ignores their log Z)."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyebm
from pyebm.energy import flat_prior


def _model(net, normalized=False):
    def model(x):
        pyro.module("net", net)
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyebm.energy_factor("e", net(x - mu).squeeze(-1) ** 2, normalized=normalized)

    return model


def test_svi_refuses_learnable_parameters_in_an_energy_factor(float64):
    net, x = torch.nn.Linear(2, 1), torch.randn(20, 2)
    with pytest.raises(pyebm.InferenceError, match=r"factor 'e' depends on \['net\$\$\$weight', 'net\$\$\$bias'\]"
                       r".*collapse.*pyebm.train.fit"):
        pyebm.infer(_model(net), x, method="svi", progress=False, seed=0)


def test_the_refusal_is_right_the_naive_elbo_collapses(float64):
    # Declared normalised (a lie here), SVI runs, and the learned energy scale shrinks towards zero everywhere:
    # the data energy falls without bound, the collapse the guard prevents.
    torch.manual_seed(0)
    net, x = torch.nn.Linear(2, 1), torch.randn(20, 2)
    before = float(net.weight.detach().norm())
    pyebm.infer(_model(net, normalized=True), x, method=pyebm.SVI(steps=300, lr=0.05), progress=False, seed=0)
    assert float(net.weight.detach().norm()) < 0.2 * before  # pyro.module trained the net's own parameters


def test_map_holds_the_parameters_fixed_and_plates_work(float64):
    # MAP optimises latent sites only; a plate inside the model is not mistaken for a latent site
    net, x = torch.nn.Linear(2, 1), torch.randn(20, 2)
    post = pyebm.infer(_model(net), x, method="map", progress=False, seed=0)
    assert post.mode["mu"].shape == (2,)


def test_a_normalised_energy_model_passes_the_guard(float64):
    decoder = pyebm.energies.GaussianDecoder(1, 2)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", flat_prior((1,)))
            pyebm.energy_factor("e", decoder(x, z), normalized=True)

    pyebm.infer(model, torch.randn(5, 2), method=pyebm.SVI(steps=5), progress=False, seed=0)
