import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

import pyebm
from pyebm.diagnostics import NonFiniteEnergyError


def log_joint(model, *args, **kwargs):
    return poutine.trace(model).get_trace(*args, **kwargs).log_prob_sum()


def test_energy_factor_adds_minus_beta_energy():
    e = torch.tensor(1.7)

    def model():
        pyebm.energy_factor("e", e, beta=2.5)

    torch.testing.assert_close(log_joint(model), torch.tensor(-2.5 * 1.7))


def test_energy_factor_in_plate_takes_batch_shape():
    e = torch.tensor([0.5, 1.0, 2.0])

    def model():
        with pyro.plate("data", 3):
            pyebm.energy_factor("e", e)

    torch.testing.assert_close(log_joint(model), -e.sum())


@pytest.mark.parametrize(
    "value, error, match",
    [
        (torch.tensor(float("nan")), NonFiniteEnergyError, "NaN"),
        (torch.tensor(float("inf")), NonFiniteEnergyError, "infinite"),
        (torch.tensor(3), TypeError, "integer"),
        (torch.tensor(1 + 2j), TypeError, "complex"),
        (1.0, TypeError, "torch.Tensor"),
        (torch.ones(3), ValueError, "scalar is due"),
    ],
)
def test_energy_factor_rejects_bad_energies(value, error, match):
    with pytest.raises(error, match=match):
        pyebm.energy_factor("e", value)


def test_non_finite_energy_error_is_a_value_error():
    assert issubclass(NonFiniteEnergyError, ValueError)


def test_energy_factor_rejects_shape_that_does_not_match_plate():
    def model():
        with pyro.plate("data", 3):
            pyebm.energy_factor("e", torch.ones(4))

    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        model()


@pytest.mark.parametrize("beta, match", [(-1.0, "negative"), (float("nan"), "NaN"), (float("inf"), "inf")])
def test_energy_factor_rejects_bad_beta(beta, match):
    with pytest.raises(ValueError, match=match):
        pyebm.energy_factor("e", torch.tensor(1.0), beta=beta)


class Quadratic(pyebm.Energy):
    def forward(self, x):
        return 0.5 * (x**2).sum(-1)


def test_energies_compose_as_sums_and_scalar_multiples():
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    q = Quadratic()
    lin = lambda x: x.sum(-1)  # noqa: E731  a plain function composes too
    torch.testing.assert_close((q + lin)(x), q(x) + lin(x))
    torch.testing.assert_close((3.0 * q)(x), 3.0 * q(x))
    torch.testing.assert_close((q * 3.0)(x), 3.0 * q(x))
    torch.testing.assert_close((q - lin)(x), q(x) - lin(x))
    torch.testing.assert_close(sum([q, q, q])(x), 3 * q(x))
    assert len((q + q + q).terms) == 3  # sums flatten


def test_model_from_energy_single_site_is_positional_whatever_its_name():
    model = pyebm.model_from_energy(Quadratic(), {"theta": 2})
    tr = poutine.trace(model).get_trace()
    torch.testing.assert_close(tr.log_prob_sum(), -Quadratic()(tr.nodes["theta"]["value"]))


def test_model_from_energy_passes_sites_and_context_as_keywords():
    def energy(a, b, shift):
        return ((a - shift) ** 2).sum() + (b**2).sum()

    model = pyebm.model_from_energy(energy, {"a": 2, "b": (2, 3)})
    tr = poutine.trace(model).get_trace(shift=1.5)
    a, b = tr.nodes["a"]["value"], tr.nodes["b"]["value"]
    assert a.shape == (2,) and b.shape == (2, 3)
    torch.testing.assert_close(tr.log_prob_sum(), -energy(a, b, 1.5))


def test_model_from_energy_flat_prior_contributes_nothing_and_follows_energy_dtype():
    e = pyebm.energies.Gaussian(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    model = pyebm.model_from_energy(e, {"x": 2})
    tr = poutine.trace(model).get_trace()
    x = tr.nodes["x"]["value"]
    assert x.dtype == torch.float64
    assert float(tr.nodes["x"]["fn"].log_prob(x)) == 0.0


def test_model_from_energy_with_prior():
    prior = {"s": dist.Gamma(3.0, 2.0)}
    model = pyebm.model_from_energy(lambda s: 0.5 * s, {"s": ()}, prior=prior)
    tr = poutine.trace(model).get_trace()
    s = tr.nodes["s"]["value"]
    torch.testing.assert_close(tr.log_prob_sum(), dist.Gamma(3.0, 2.0).log_prob(s) - 0.5 * s)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"sites": {}}, ValueError, "sites is empty"),
        ({"sites": {"x": -1}}, ValueError, "positive ints"),
        ({"sites": {"x": 2}, "prior": {"y": dist.Normal(0.0, 1.0)}}, ValueError, "not in sites"),
        ({"sites": {"x": 2}, "prior": {"x": dist.Normal(0.0, 1.0)}}, ValueError, "has shape"),
        ({"sites": {"x": 2}, "prior": {"x": 3.0}}, TypeError, "pyro distribution"),
    ],
)
def test_model_from_energy_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        pyebm.model_from_energy(Quadratic(), **kwargs)


def test_model_from_energy_non_scalar_energy_is_an_error():
    model = pyebm.model_from_energy(lambda x: x**2, {"x": 3})
    with pytest.raises(ValueError, match="scalar is due"):
        model()
