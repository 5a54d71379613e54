r"""``adapt``: the weights adapted at test time as latent variables, inferred by any of pyebm's methods; ``predict``:
predictions averaged over their posterior.

The model behind :func:`adapt` is

.. math:: \theta \sim \mathcal N(\theta_0, s^2 I), \qquad p(\theta \mid x) \propto \mathcal N(\theta;\theta_0,s^2I)\,
          \exp\Bigl(-\beta\sum_i E(\theta; x_i)\Bigr),

with :math:`\theta_0` the trained values of the chosen weights and :math:`E` an unsupervised (or neighbour-supervised)
energy of the test batch. MAP is TTT's "a few gradient steps", done to convergence and anchored by the prior;
Laplace and NUTS add the uncertainty that point estimates throw away.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.func import vmap
from torch.utils._pytree import tree_leaves

from ..diagnostics import check_beta
from ..energy import energy_factor
from ..inference import infer
from ..inference.registry import resolve_method
from ..inference.result import Posterior
from ..state import resolve_seed, seeded
from .batched import adapt_independent
from .energies import per_example, resolve_energy
from .latents import Functional, resolve_latents

__all__ = ["adapt", "predict"]


def _scales(prior_scale, latents: dict[str, torch.Tensor]) -> dict[str, float]:
    if isinstance(prior_scale, dict):
        missing = set(latents) - set(prior_scale)
        if missing:
            raise ValueError(f"prior_scale has no entry for latents {sorted(missing)}.")
        scales = {n: prior_scale[n] for n in latents}
    else:
        scales = dict.fromkeys(latents, prior_scale)
    for n, s in scales.items():
        if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
            raise ValueError(f"prior_scale for {n!r} must be a finite number > 0, got {s!r}.")
    return scales


def adapt(
    net: nn.Module,
    x,
    latents: str | Sequence[str] | Callable,
    energy: str | Callable = "entropy",
    method="map",
    prior_scale: float | dict = 0.1,
    *,
    beta: float = 1.0,
    independent: bool = False,
    seed: int | None = None,
    progress: bool = False,
    **options,
) -> Posterior:
    r"""Infer the test-time weights of ``net`` as latent variables and return a :class:`pyebm.Posterior`.

    Parameters
    ----------
    net : nn.Module
        The trained network; never modified (the weights enter through ``torch.func.functional_call``).
    x : tensor or tuple of tensors
        The test batch (leading dimension = examples), or what the energy needs, e.g. ``(inputs, targets)``.
    latents : names, a name, or a predicate ``(name, parameter) -> bool``
        The parameters of ``net`` to adapt (normalisation scales/shifts, FiLM parameters, the last layer, ...).
    energy : "entropy", "free_energy" or callable
        ``energy(forward, x) -> (batch,)``: :func:`pyebm.ttt.entropy` (TENT), :func:`pyebm.ttt.free_energy` (JEM),
        :func:`pyebm.ttt.supervised`, :func:`pyebm.ttt.neighbours`' energy, or your own self-supervised loss.
    method : str or method object
        ``"map"``, ``"laplace"``, ``"svi"``, ``"nuts"``, ``"hmc"`` or a configured ``pyebm.MAP(...)`` etc.
    prior_scale : float or dict
        :math:`s` of the prior :math:`\mathcal N(\theta_0, s^2)` (per latent name with a dict).
    beta : float
        Inverse temperature of the energy.
    independent : bool
        Give every example its own copy of the latents (``x``'s leading dimension), all adapted at once, vectorised
        (MAP or Laplace; ``options``: ``steps``, ``tol``). Otherwise one set of latents is shared by the batch.
    seed, progress
        As for :func:`pyebm.infer`.

    Returns
    -------
    Posterior
        Sites are the latent names (shape ``(B, *shape)`` when independent). ``diagnostics["ttt"]`` records the latents.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module, got {type(net).__name__}.")
    trained = resolve_latents(net, latents)
    energy_fn = resolve_energy(energy)
    scales = _scales(prior_scale, trained)
    fn = Functional(net, trained)
    n = tree_leaves(x)[0].shape[0]
    if independent:
        runner = resolve_method(method)
        if runner.name not in ("map", "laplace"):
            raise ValueError(f"independent adaptation supports method 'map' or 'laplace', got {method!r}; run other "
                             "methods per input (independent=False on one example).")
        unknown = set(options) - {"steps", "tol"}
        if unknown:
            raise TypeError(f"unexpected options {sorted(unknown)}; independent adaptation takes steps and tol (or "
                            "configure the method object, e.g. method=pyebm.MAP(steps=200)).")
        settings = {"steps": runner.steps, "tol": runner.tol, **options}
        beta = check_beta(beta)
        flat_scales = fn.flatten({k: torch.full(v.shape, scales[k], dtype=v.dtype) for k, v in trained.items()})
        with seeded(resolve_seed(seed)):
            post = adapt_independent(fn, x, energy_fn, flat_scales, beta, runner.name == "laplace", **settings)
    else:
        if options:
            raise TypeError(f"unexpected options {sorted(options)}; configure the method object instead "
                            "(e.g. method=pyebm.NUTS(num_samples=500)).")

        def model():
            values = {k: pyro.sample(k, dist.Normal(v, scales[k]).to_event(v.dim())) for k, v in trained.items()}
            e = per_example(energy_fn(lambda inputs: fn(values, inputs), x), n)
            energy_factor("ttt_energy", e.sum(), beta=beta)

        post = infer(model, method=method, seed=seed, progress=progress)
    post.diagnostics["ttt"] = {"latents": list(trained), "independent": independent}
    return post


def predict(net: nn.Module, posterior: Posterior, x: torch.Tensor, num_samples: int = 100,
            seed: int | None = None) -> torch.Tensor:
    r"""Class probabilities averaged over the posterior of the adapted weights,
    :math:`\frac1S\sum_s \mathrm{softmax}(f_{\theta_s}(x))` (MAP: the plug-in :math:`\mathrm{softmax}(f_{\hat\theta}(x))`).

    ``x`` are the inputs to predict (for independent adaptation, one per adapted copy).
    """
    info = posterior.diagnostics.get("ttt")
    if info is None:
        raise ValueError("posterior does not come from pyebm.ttt.adapt (no 'ttt' diagnostics).")
    params = dict(net.named_parameters())
    fn = Functional(net, {k: params[k].detach() for k in info["latents"]})
    if posterior.method == "map":
        draws = {k: v.unsqueeze(0) for k, v in posterior.mode.items()}
    else:
        draws = posterior.sample(num_samples, seed=seed)
    draws = {k: v.to(params[k].dtype) for k, v in draws.items()}
    with torch.no_grad():
        if info["independent"]:
            def one_input(values_b, x_b):  # values_b: (S, *shape) for this input
                return vmap(lambda v: fn(v, x_b.unsqueeze(0)).squeeze(0))(values_b)

            logits = vmap(one_input, in_dims=(1, 0))(draws, x)  # (B, S, C)
            return torch.softmax(logits, -1).mean(1)
        logits = vmap(lambda v: fn(v, x))(draws)  # (S, B, C)
        return torch.softmax(logits, -1).mean(0)
