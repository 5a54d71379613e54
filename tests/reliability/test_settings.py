"""Every setting is validated where it is declared: each invalid value of each method object, objective and public
entry is a ValueError (TypeError for a wrong kind) naming it, before any work is done."""

import math

import pytest
import torch

import pyebm
from pyebm import train
from pyebm.samplers import langevin_init, langevin_step

NAN, INF = float("nan"), float("inf")

METHODS = [
    (pyebm.MAP, "steps", [0, -1, 1.5]), (pyebm.MAP, "tol", [0.0, -1e-3, NAN, INF]), (pyebm.MAP, "lr", [0.0, -0.1]),
    (pyebm.MAP, "optimizer", ["sgd"]), (pyebm.Laplace, "hessian", ["kfac", "dense"]),
    (pyebm.SVI, "steps", [0]), (pyebm.SVI, "lr", [0.0, -0.01, NAN]), (pyebm.SVI, "lr_decay", [0.0, -0.5, 1.5]),
    (pyebm.SVI, "num_particles", [0, -2]), (pyebm.SVI, "init_scale", [0.0, -1.0]), (pyebm.SVI, "guide", ["gaussian"]),
    (pyebm.NUTS, "num_samples", [0, -5]), (pyebm.NUTS, "warmup_steps", [-1]), (pyebm.NUTS, "num_chains", [0]),
    (pyebm.NUTS, "target_accept", [0.0, 1.0, 1.5]), (pyebm.NUTS, "max_tree_depth", [0]),
    (pyebm.NUTS, "chain_method", ["threads"]),
    (pyebm.HMC, "step_size", [0.0, -1.0, 1e-300, NAN, INF]), (pyebm.HMC, "trajectory_length", [0.0, -2.0]),
    (pyebm.HMC, "num_steps", [0, 10**6]),
]


@pytest.mark.parametrize("cls,name,values", METHODS, ids=[f"{c.__name__}.{n}" for c, n, _ in METHODS])
def test_method_settings_are_validated(cls, name, values):
    for value in values:
        with pytest.raises(ValueError, match=name):
            cls(**{name: value})


OBJECTIVES = [
    (train.CD, "k", [0]), (train.CD, "step_size", [0.0, -0.1]), (train.CD, "grad_clip", [0.0, -1.0]),
    (train.CD, "noise_scale", [-1.0]), (train.CD, "alpha", [-1.0]), (train.PCD, "buffer_size", [0]),
    (train.PCD, "reinit_prob", [-0.1, 1.5]), (train.NCE, "ratio", [0.0, -1.0]), (train.Margin, "margin", [0.0]),
    (train.Margin, "kind", ["cube"]), (train.InfoNCE, "temperature", [0.0, -1.0]), (train.DSM, "sigma", [0.0, -0.1]),
    (train.SSM, "projections", [0, -1]), (train.KMeansObjective, "beta", [0.0, -1.0, NAN]),
    (train.SparseCodingObjective, "fista_steps", [0]), (train.VAEObjective, "latent_dim", [0]),
]


@pytest.mark.parametrize("cls,name,values", OBJECTIVES, ids=[f"{c.__name__}.{n}" for c, n, _ in OBJECTIVES])
def test_objective_settings_are_validated(cls, name, values):
    for value in values:
        with pytest.raises(ValueError, match=name):
            cls(**{name: value})


def test_fit_settings_are_checked_before_training(tmp_path):
    energy = pyebm.energies.MLPEnergy(2, (8,))
    data = torch.randn(50, 2)
    for bad in [dict(steps=-1), dict(batch_size=0), dict(lr=0.0), dict(lr_decay=0.0), dict(lr_decay=2.0)]:
        with pytest.raises(ValueError):
            train.fit(energy, data, "dsm", progress=False, **bad)
    with pytest.raises(pyebm.CheckpointError, match="does not exist"):
        train.fit(energy, data, "dsm", steps=1, progress=False, checkpoint=tmp_path / "missing" / "ck.pt")


def test_public_entries_validate_their_arguments():
    model = pyebm.model_from_energy(lambda x: (x**2).sum(), {"x": 2})
    post = pyebm.infer(model, method="laplace", seed=0, progress=False)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            post.sample(bad)
    for hdi in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="hdi_prob"):
            post.summary(hdi_prob=hdi)
    with pytest.raises(ValueError, match="distinct"):
        pyebm.compare(post, post, labels=["a", "a"])
    for seed in (-1, 2**64, 1.5):
        with pytest.raises((ValueError, TypeError), match="seed"):
            pyebm.infer(model, method="map", seed=seed, progress=False)
    with pytest.raises(ValueError, match=r"init names \['y'\]"):
        pyebm.infer(model, method=pyebm.MAP(init={"y": torch.zeros(2)}), progress=False)
    with pytest.raises(ValueError, match=r"init\['x'\] has shape \(3,\)"):
        pyebm.infer(model, method=pyebm.MAP(init={"x": torch.zeros(3)}), progress=False)
    for beta in (-1.0, NAN, torch.tensor([1.0, 2.0])):
        with pytest.raises(ValueError, match="beta"):
            pyebm.temper(model, beta)
    with pytest.raises(TypeError, match="complex"):
        pyebm.energy_factor("e", torch.tensor(1.0 + 1.0j))


def test_sampler_and_grid_settings_are_validated():
    energy = lambda x: 0.5 * (x**2).sum(-1)  # noqa: E731
    state = langevin_init(energy, torch.zeros(4, 2))
    for bad in [dict(step_size=0.0), dict(step_size=INF), dict(grad_clip=-1.0), dict(bounds=(1.0, -1.0)),
                dict(noise_scale=-1.0)]:
        options = {"step_size": 0.1, **bad}
        with pytest.raises(ValueError):
            langevin_step(state, energy, options.pop("step_size"), **options)
    for bounds, num in [([(1.0, -1.0)], 11), ([(0.0, INF)], 11), ([(0.0, 1.0)], 2)]:
        with pytest.raises(ValueError):
            pyebm.energies.grid_density(lambda x: x[..., 0], bounds, num)


def test_reference_energies_refuse_parameters_where_their_answers_fail():
    for make in [lambda: pyebm.energies.Banana(s=0.0), lambda: pyebm.energies.Banana(s=-1.0),
                 lambda: pyebm.energies.Ring(width=0.0), lambda: pyebm.energies.Ring(radius=-1.0),
                 lambda: pyebm.energies.Funnel(scale=0.0), lambda: pyebm.energies.DoubleWell(height=-1.0),
                 lambda: pyebm.energies.DoubleWell(dim=0),
                 lambda: pyebm.energies.GaussianMixture(torch.zeros(2, 2), scale=0.0),
                 lambda: pyebm.energies.Gaussian(torch.zeros(2), torch.tensor([[1.0, 2.0], [0.0, 1.0]])),
                 lambda: pyebm.energies.Gaussian(torch.tensor([NAN, 0.0]), torch.eye(2))]:
        with pytest.raises(ValueError):
            make()


def test_independent_adaptation_validates_beta_and_memory():
    net = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="beta"):
        pyebm.ttt.adapt(net, x, "bias", "entropy", "map", beta=-1.0, independent=True)
    with pytest.raises(TypeError, match="unexpected options"):
        pyebm.ttt.adapt(net, x, "bias", "entropy", "map", independent=True, num_samples=3)
    big = torch.nn.Linear(200, 300)  # 60,300 latents per input: 2048 dense Laplace precisions are refused up front
    with pytest.raises(MemoryError, match="GiB"):
        pyebm.ttt.adapt(big, torch.randn(2048, 200), "weight", "entropy", "laplace", independent=True)
    assert math.isfinite(float(pyebm.ttt.adapt(net, x, "bias", "entropy", "map", independent=True).mode["bias"].sum()))
