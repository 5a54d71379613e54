r"""Training with the latents switched on: every training batch adapts its own latents, as at test time, and the
network is trained through that adaptation.

For a batch :math:`(x, y)` (one "domain"), the inner loop takes ``inner_steps`` preconditioned gradient steps on the
test-time potential from the trained values :math:`\theta_0`,

.. math:: \theta_{j+1} = \theta_j - \eta\, s^2 \nabla_\theta\Bigl[\beta\sum_i E(\theta_j; x_i)
          + \tfrac1{2s^2}\|\theta_j-\theta_0\|^2\Bigr],

(the :math:`s^2` makes η dimensionless: η = 1 jumps to the prior's minimum), and the outer loss is the supervised loss
of the *adapted* network, differentiated through the inner steps into all weights, :math:`\theta_0` and the prior
scale :math:`s` (learned on the log scale) included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from tqdm import tqdm

from ..diagnostics import InferenceError
from ..state import resolve_seed, seeded
from .energies import per_example, resolve_energy
from .latents import resolve_latents

__all__ = ["fit", "TTTResult"]


@dataclass
class TTTResult:
    """What :func:`fit` returns; the network is trained in place."""

    loss: list
    prior_scale: float
    prior_scale_history: list
    wall_time: float
    seed: int


def fit(
    net: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    latents: str | Sequence[str] | Callable,
    energy: str | Callable = "entropy",
    *,
    prior_scale: float = 0.1,
    learn_prior_scale: bool = True,
    inner_steps: int = 3,
    inner_lr: float = 0.5,
    first_order: bool = False,
    beta: float = 1.0,
    domain: Callable | None = None,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int | None = None,
    progress: bool = True,
) -> TTTResult:
    r"""Train ``net`` (in place) on ``data = (inputs, labels)`` with the test-time latents on.

    Parameters
    ----------
    latents, energy, beta
        As for :func:`pyebm.ttt.adapt`.
    prior_scale : float
        Initial :math:`s`; learned (through the inner loop) unless ``learn_prior_scale=False``.
    inner_steps, inner_lr
        Adaptation steps per batch and their dimensionless size η.
    first_order : bool
        Do not differentiate through the inner gradients (cheaper, and blind to :math:`s`).
    domain : callable, optional
        ``domain(x, generator) -> x'``: a random shift applied to each whole batch, so that batches are domains and the
        network learns to work *after* adaptation to one (the training counterpart of a shifted test batch).
    steps, batch_size, lr, seed, progress
        Outer Adam optimisation.
    """
    inputs, labels = data
    if len(inputs) != len(labels):
        raise ValueError("inputs and labels must have the same length.")
    energy_fn = resolve_energy(energy)
    names = list(resolve_latents(net, latents))
    if not (math.isfinite(prior_scale) and prior_scale > 0):
        raise ValueError(f"prior_scale must be a finite number > 0, got {prior_scale!r}.")
    params = dict(net.named_parameters())
    dtype = params[names[0]].dtype
    log_s = nn.Parameter(torch.tensor(math.log(prior_scale), dtype=dtype), requires_grad=learn_prior_scale)
    opt = torch.optim.Adam([*net.parameters()] + ([log_s] if learn_prior_scale else []), lr=lr)
    seed = resolve_seed(seed)
    g = torch.Generator().manual_seed(seed)
    history, scales = [], []
    start = time.perf_counter()
    with seeded(seed), tqdm(range(steps), desc="ttt.fit", disable=not progress, leave=False) as bar:
        for step in bar:
            idx = torch.randint(len(inputs), (batch_size,), generator=g)
            xb, yb = inputs[idx], labels[idx]
            if domain is not None:
                xb = domain(xb, g)
            s2 = torch.exp(2 * log_s)
            theta0 = {k: params[k] for k in names}
            theta = dict(theta0)
            for _ in range(inner_steps):
                e = per_example(energy_fn(lambda v, th=theta: functional_call(net, th, (v,)), xb), len(xb))
                U = beta * e.sum() + sum(((theta[k] - theta0[k]) ** 2).sum() for k in names) / (2 * s2)
                grads = torch.autograd.grad(U, [theta[k] for k in names], create_graph=not first_order)
                theta = {k: theta[k] - inner_lr * s2 * gk for k, gk in zip(names, grads)}
            loss = F.cross_entropy(functional_call(net, theta, (xb,)), yb)
            if not bool(torch.isfinite(loss)):
                raise InferenceError(f"ttt.fit: the loss became {float(loss.detach())} at step {step + 1}; lower lr or "
                                     "inner_lr, or a smaller prior_scale.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            scales.append(float(log_s.detach().exp()))
            if step % 20 == 0:
                bar.set_postfix(loss=f"{history[-1]:.3g}", s=f"{scales[-1]:.3g}")
    return TTTResult(history, scales[-1] if scales else prior_scale, scales, time.perf_counter() - start, seed)
