"""Online evidence during training (Immer et al. 2021): on a linear-Gaussian network the Laplace evidence is the
exact marginal likelihood, so the hyperparameters that training settles on must be its exact joint maximiser."""

import math

import pytest
import torch

from pyebm import ttt


@pytest.fixture
def regression(float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + 0.5 * torch.randn(40, generator=g)
    return x, y


def exact_type_ii(x, y):
    """(prior precision, noise) maximising log N(y; 0, (X X^T + 1 1^T) / delta + sigma^2 I): weight and bias share
    one zero-mean prior."""
    from scipy import optimize

    design = torch.cat([x, torch.ones(len(x), 1)], 1)

    def neg(p):
        cov = design @ design.T * math.exp(-p[0]) + math.exp(2 * p[1]) * torch.eye(len(x))
        return -float(torch.distributions.MultivariateNormal(torch.zeros(len(x)), cov).log_prob(y))

    best = optimize.minimize(neg, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    return math.exp(best.x[0]), math.exp(best.x[1]), -best.fun


def test_online_evidence_settles_on_the_exact_type_ii_maximum(regression):
    """Weights by Adam to (near) the MAP between evidence steps; at the fixed point the hyperparameters maximise the
    exact marginal likelihood. Tolerance 1e-3 relative: the weights are within Adam's final jitter of the MAP."""
    x, y = regression
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    result = ttt.marglik_training(net, (x, y[:, None]), "squared", epochs=1500, lr=0.05, every=100, burnin=100,
                                  hessian="ggn", seed=0)
    delta, sigma, log_ml = exact_type_ii(x, y)
    assert result.prior_precision["weight"] == pytest.approx(delta, rel=1e-3)
    assert result.prior_precision["bias"] == result.prior_precision["weight"]
    assert result.noise == pytest.approx(sigma, rel=1e-3)
    assert result.history[-1]["log_evidence"] == pytest.approx(log_ml, abs=1e-3)
    assert len(result.history) == 15 and result.history[0]["epoch"] == 100
    assert result.posterior.diagnostics["hessian"].shape == (4, 4)


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")  # 200 epochs: the last weights are off the mode
def test_online_evidence_with_kfac_and_per_layer_precisions(regression):
    """K-FAC evidence steps with one precision per parameter tensor run end to end and raise the evidence from its
    first step; bad settings are refused."""
    x, y = regression
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    result = ttt.marglik_training(net, (x, y[:, None]), epochs=200, every=50, burnin=50, per_layer=True, seed=0)
    assert set(result.prior_precision) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert len(set(result.prior_precision.values())) > 1
    assert result.history[-1]["log_evidence"] > result.history[0]["log_evidence"]
    assert list(result.posterior.diagnostics["hessian"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(ValueError, match="kind must be"):
        ttt.marglik_training(net, (x, y), "poisson")
    with pytest.raises(ValueError, match="noise must be"):
        ttt.marglik_training(net, (x, y), noise=-1.0)
    with pytest.raises(ValueError, match="batch_size must be"):
        ttt.marglik_training(net, (x, y), batch_size=0)
