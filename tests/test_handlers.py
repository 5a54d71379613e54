import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

import pyebm


def model():
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyebm.energy_factor("energy", z**2 + 1.0, beta=2.0)
    pyro.factor("plain", torch.tensor(-0.25))
    pyro.sample("y", dist.Normal(z, 1.0), obs=torch.tensor(0.3))
    return z


def parts(fn, *args):
    tr = poutine.trace(fn).get_trace(*args)
    tr.compute_log_prob()
    return {k: v["log_prob_sum"] for k, v in tr.nodes.items() if v["type"] == "sample"}, tr.nodes["z"]["value"]


@pytest.mark.parametrize("beta", [0.0, 0.5, 3.0])
def test_temper_scales_only_energy_factors(beta):
    base, z = parts(poutine.condition(model, {"z": torch.tensor(0.7)}))
    hot, _ = parts(poutine.condition(pyebm.temper(model, beta), {"z": torch.tensor(0.7)}))
    torch.testing.assert_close(hot["energy"], beta * base["energy"])
    torch.testing.assert_close(hot["energy"], torch.tensor(-beta * 2.0 * (0.7**2 + 1.0)))
    for name in ("z", "plain", "y"):  # prior, a plain pyro.factor and a likelihood are untouched
        torch.testing.assert_close(hot[name], base[name])


def test_temper_as_context_manager_and_nesting_multiplies():
    cond = poutine.condition(model, {"z": torch.tensor(0.7)})
    with pyebm.temper(beta=0.5):
        with pyebm.temper(beta=4.0):
            nested, _ = parts(cond)
    base, _ = parts(cond)
    torch.testing.assert_close(nested["energy"], 2.0 * base["energy"])


def test_temper_records_effective_beta():
    tr = poutine.trace(pyebm.temper(model, 0.25)).get_trace()
    assert tr.nodes["energy"]["infer"]["beta"] == pytest.approx(0.5)


@pytest.mark.parametrize("beta", [-0.1, float("nan"), float("inf")])
def test_temper_rejects_bad_beta(beta):
    with pytest.raises(ValueError):
        pyebm.temper(model, beta)
