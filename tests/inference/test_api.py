import math
import random

import numpy as np
import pyro
import pytest
import torch

import pyebm
from pyebm.inference.registry import METHODS

from conftest import gaussian_2d

# One contract, every registered method, the same exact model: a 2-D Gaussian energy, flat prior.
# Each method states how close it must be: deterministic methods to optimiser tolerance, SVI to its
# optimisation noise (see test_svi.py), MCMC to 4 Monte Carlo standard errors from its own ESS.
CONTRACT = {
    "map": (pyebm.MAP(), lambda post, sd: 1e-6 * torch.ones(2)),
    "laplace": (pyebm.Laplace(), lambda post, sd: 1e-6 * torch.ones(2)),
    "svi": (pyebm.SVI(), lambda post, sd: 0.1 * sd),
    "nuts": (pyebm.NUTS(num_samples=400, warmup_steps=300),
             lambda post, sd: 4 * sd / torch.tensor(list(post.diagnostics["ess_bulk"].values())).sqrt()),
    "hmc": (pyebm.HMC(num_samples=400, warmup_steps=300),
            lambda post, sd: 4 * sd / torch.tensor(list(post.diagnostics["ess_bulk"].values())).sqrt()),
    "chees": (pyebm.ChEES(num_samples=200, warmup_steps=200, num_chains=8),
              lambda post, sd: 4 * sd / torch.tensor(list(post.diagnostics["ess_bulk"].values())).sqrt()),
    # 4096 particles that resampling correlates: 0.1 sd is several Monte Carlo errors
    "smc": (pyebm.SMC(reference=5.0), lambda post, sd: 0.1 * sd),
}


def test_every_registered_method_is_in_the_contract():
    assert set(METHODS) == set(CONTRACT)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_contract_on_the_exact_gaussian(name, float64):
    e = gaussian_2d()
    sd = e.covariance().diagonal().sqrt()
    method, tol = CONTRACT[name]
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method=method, seed=0, progress=False)
    assert isinstance(post, pyebm.Posterior) and post.method == name
    assert ((post.mean()["x"] - e.mu).abs() <= tol(post, sd)).all()
    draws = post.sample(7, seed=0)
    assert set(draws) == {"x"} and draws["x"].shape == (7, 2)
    assert post.std()["x"].shape == (2,)
    assert post.wall_time > 0 and post.seed == 0
    idata = post.to_arviz(num_samples=50)
    x = idata.posterior["x"]
    assert x.dims[:2] == ("chain", "draw")
    # MAP is one draw (as the issue on ArviZ asks: not 1000 identical draws)
    assert x.shape[:2] == {"nuts": (2, 400), "hmc": (2, 400), "chees": (8, 200), "smc": (8, 512), "map": (1, 1)}.get(name, (1, 50))
    table = post.summary(num_samples=200)
    assert list(table.index) == ["x[0]", "x[1]"]
    assert {"mean", "sd", "hdi_3%", "hdi_97%"} <= set(table.columns)
    np.testing.assert_allclose(table["mean"].to_numpy(), post.mean()["x"].numpy())


def test_mcmc_arviz_has_sample_stats_and_summary_has_diagnostics(float64):
    post = pyebm.infer(pyebm.model_from_energy(gaussian_2d(), {"x": 2}),
                       method=pyebm.NUTS(num_samples=200, warmup_steps=200), seed=0, progress=False)
    idata = post.to_arviz()
    assert idata.sample_stats["diverging"].shape == (2, 200)
    table = post.summary()
    assert {"ess_bulk", "r_hat"} <= set(table.columns)
    assert (table["r_hat"] < 1.05).all()


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"valid methods are \['chees', 'hmc', 'laplace', 'map', 'nuts', 'smc', 'svi'\]"):
        pyebm.infer(pyebm.model_from_energy(gaussian_2d(), {"x": 2}), method="gibbs")


def test_method_must_be_a_name_or_method_object():
    with pytest.raises(TypeError, match="configured method object"):
        pyebm.infer(pyebm.model_from_energy(gaussian_2d(), {"x": 2}), method=42)
    post = pyebm.infer(pyebm.model_from_energy(gaussian_2d(), {"x": 2}), method=pyebm.MAP, progress=False)
    assert post.method == "map"


@pytest.mark.parametrize("method", ["map", "laplace", pyebm.SVI(steps=20), pyebm.NUTS(num_samples=30, warmup_steps=150)])
def test_no_leaks_param_store_and_global_rng(method):
    pyro.param("user_param", torch.tensor([1.0, 2.0]))
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    post = pyebm.infer(pyebm.model_from_energy(gaussian_2d(), {"x": 2}), method=method, seed=1, progress=False)
    post.sample(10, seed=2)
    post.mean()
    assert list(pyro.get_param_store().keys()) == ["user_param"]
    torch.testing.assert_close(pyro.param("user_param"), torch.tensor([1.0, 2.0]))
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]


@pytest.mark.parametrize("method", ["laplace", pyebm.SVI(steps=30), pyebm.NUTS(num_samples=30, warmup_steps=150)])
def test_same_seed_same_result(method):
    model = pyebm.model_from_energy(gaussian_2d(torch.float32), {"x": 2})
    a = pyebm.infer(model, method=method, seed=11, progress=False).sample(5, seed=3)["x"]
    b = pyebm.infer(model, method=method, seed=11, progress=False).sample(5, seed=3)["x"]
    assert torch.equal(a, b)


def test_compare_tabulates_methods_side_by_side(float64):
    e = gaussian_2d()
    model = pyebm.model_from_energy(e, {"x": 2})
    posts = [pyebm.infer(model, method=m, seed=0, progress=False) for m in ("map", "laplace", "laplace")]
    table = pyebm.compare(*posts)
    assert list(table.columns) == ["map", "laplace", "laplace_2"]
    assert table.loc[("x[1]", "mean"), "map"] == pytest.approx(-2.0, abs=1e-6)
    assert table.loc[("x[0]", "sd"), "map"] == 0.0
    assert table.loc[("x[0]", "sd"), "laplace"] == pytest.approx(math.sqrt(float(e.covariance()[0, 0])), abs=1e-8)
    assert table.loc[("log_evidence", ""), "laplace"] == pytest.approx(e.log_normalizer(), abs=1e-8)
    assert math.isnan(table.loc[("log_evidence", ""), "map"])
    assert (table.loc[("wall_time", "s")] > 0).all()
    with pytest.raises(ValueError, match="labels"):
        pyebm.compare(*posts, labels=["a"])
