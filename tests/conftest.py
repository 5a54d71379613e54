import warnings

import pyro
import pytest
import torch


@pytest.fixture
def float64():
    """Run a test in float64 (precision is the point of exact tests); restore the default after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(autouse=True)
def _clean_pyro_state():
    """Every test starts from an empty param store and leaves none behind."""
    pyro.clear_param_store()
    with warnings.catch_warnings():
        yield
    pyro.clear_param_store()


def assert_within_mc_error(post, mean, sd, name="x"):
    """Mean within 4 Monte Carlo standard errors sd/sqrt(ESS); sd within 4 standard errors of a Gaussian
    sample sd, sd/sqrt(2 ESS) (bulk ESS of each element, from the chains themselves)."""
    ess = torch.tensor([v for k, v in post.diagnostics["ess_bulk"].items() if k.startswith(name)])
    m, s = post.mean()[name].reshape(-1), post.std()[name].reshape(-1)
    mean, sd = torch.as_tensor(mean).reshape(-1), torch.as_tensor(sd).reshape(-1)
    assert ((m - mean).abs() <= 4 * sd / ess.sqrt()).all(), (m, mean, ess)
    assert ((s - sd).abs() <= 4 * sd / (2 * ess).sqrt()).all(), (s, sd, ess)


def gaussian_2d(dtype=torch.float64):
    """The exact reference of the suite: a correlated 2-D Gaussian energy."""
    from pyebm.energies import Gaussian

    precision = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=dtype)
    return Gaussian(torch.tensor([1.0, -2.0], dtype=dtype), precision)


@pytest.fixture
def x64():
    """JAX in float64 for exact comparisons; the flag is restored afterwards."""
    import jax

    old = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Every available device: the CPU always, CUDA where there is one (skipped otherwise). Tests that take it build
    their energies and data there and check that answers and results stay there."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return torch.device(request.param)
