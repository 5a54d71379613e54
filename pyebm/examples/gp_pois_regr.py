"""posteriordb's ``gp_pois_regr`` as a Pyro model: a latent Gaussian process (squared-exponential kernel, non-centred)
under a Poisson likelihood with a log link, 13 parameters. The many-chain benchmark and ChEES's stuck-chain test use
it; the NumPyro twin lives in ``benchmarks/nuts_backends.py``, beside the only code that needs JAX."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

__all__ = ["X", "K", "model"]

#: inputs and counts of posteriordb's data set
X = (-10.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0)
K = (40.0, 37.0, 29.0, 12.0, 4.0, 3.0, 9.0, 19.0, 77.0, 82.0, 33.0)


def model(x: torch.Tensor, k: torch.Tensor | None) -> None:
    r""":math:`\rho \sim \mathrm{Gamma}(25, 4)`, :math:`\alpha \sim \mathrm{HalfNormal}(2)`,
    :math:`f = \mathrm{chol}(K_{\alpha,\rho}(x, x) + 10^{-10} I)\,\tilde f` with :math:`\tilde f \sim \mathcal N(0, I)`,
    :math:`k \sim \mathrm{Poisson}(e^{f})`."""
    rho = pyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = pyro.sample("alpha", dist.HalfNormal(2.0))
    f_tilde = pyro.sample("f_tilde", dist.Normal(0.0, 1.0).expand([x.shape[0]]).to_event(1))
    d = x[:, None] - x[None, :]
    cov = alpha**2 * torch.exp(-0.5 * d**2 / rho**2) + 1e-10 * torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
    pyro.sample("k", dist.Poisson(torch.exp(torch.linalg.cholesky(cov) @ f_tilde)).to_event(1), obs=k)
