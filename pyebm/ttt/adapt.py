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

import dataclasses
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
from .evidence import Evidence, Residuals, tune_prior_scales
from .latents import Functional, resolve_latents
from .linearized import LINKS, glm_outputs

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
    prior_scale: float | dict | str | Evidence = 0.1,
    *,
    beta: float = 1.0,
    independent: bool = False,
    prior_mean: str = "trained",
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
    prior_scale : float, dict, "evidence" or Evidence
        :math:`s` of the prior :math:`\mathcal N(\theta_0, s^2)` (per latent name with a dict); or chosen by
        maximising the Laplace evidence (``"evidence"``, or :class:`pyebm.ttt.Evidence` for per-latent scales and
        settings; shared adaptation with method ``"laplace"``; ``Evidence(noise=True)`` tunes a squared-error
        energy's noise too), see :mod:`pyebm.ttt.evidence`. The chosen scales are in
        ``post.diagnostics["prior_scale"]`` (and ``["noise"]``), the evidence of every fit in ``["log_evidence_path"]``.
    beta : float
        Inverse temperature of the energy.
    independent : bool
        Give every example its own copy of the latents (``x``'s leading dimension), all adapted at once, vectorised
        (MAP or Laplace; ``options``: ``steps``, ``tol``). Otherwise one set of latents is shared by the batch.
    prior_mean : {"trained", "zero"}
        Centre of the prior: the trained values (test-time adaptation: stay near what training found), or zero, a
        weight-decay prior :math:`\mathcal N(0, s^2)` (Laplace of a trained network on its training data, as
        laplace-torch does; the optimisation then starts at the trained values). Shared adaptation only for "zero".
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
    tuned = Evidence() if isinstance(prior_scale, str) and prior_scale == "evidence" else prior_scale
    tuned = tuned if isinstance(tuned, Evidence) else None
    scales = _scales(tuned.init if tuned else prior_scale, trained)
    fn = Functional(net, trained)
    n = tree_leaves(x)[0].shape[0]
    if prior_mean not in ("trained", "zero"):
        raise ValueError(f"prior_mean must be 'trained' or 'zero', got {prior_mean!r}.")
    if prior_mean == "zero" and independent:
        raise ValueError("prior_mean='zero' is for a shared adaptation (independent=False).")
    means = trained if prior_mean == "trained" else {k: torch.zeros_like(v) for k, v in trained.items()}
    if tuned and (independent or resolve_method(method).name != "laplace"):
        raise ValueError("prior_scale='evidence' needs method='laplace' (the evidence is Laplace's) and a shared "
                         "adaptation (independent=False).")
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

        runner = resolve_method(method)
        if prior_mean == "zero" and getattr(runner, "init", "absent") is None and getattr(runner, "at", None) is None:
            # start where training ended
            runner = dataclasses.replace(runner, init=dict(trained))

        def energy_at(noise):
            return energy_fn if noise is None else energy_fn.with_noise(noise)

        def fit(scales: dict, noise: float | None = None):
            energy = energy_at(noise)
            natural = getattr(energy, "natural", None)  # the energy's outputs and curvature, for hessian="ggn"

            scale = {k: v.new_tensor(scales[k]) for k, v in means.items()}  # (a tensor: half a float's cost)

            def model():
                values = {k: pyro.sample(k, dist.Normal(v, scale[k]).to_event(v.dim())) for k, v in means.items()}
                forward = _forward_once(fn, values)
                e = per_example(energy(forward, x), n)
                energy_factor("ttt_energy", e.sum(), beta=beta, gauss_newton=natural and (lambda: natural(forward, x)))

            return infer(model, method=runner, seed=seed, progress=progress)

        def residuals(post, noise: float) -> Residuals:
            with torch.no_grad():
                e = per_example(energy_at(noise)(lambda inputs: fn(post.mode, inputs), x), n).sum()
            return Residuals.of_energy(float(e), x[1].numel(), noise)

        if tuned and tuned.noise:
            if getattr(energy_fn, "noise", None) is None or beta != 1.0:
                raise ValueError("Evidence(noise=True) tunes the noise of a Gaussian likelihood: give energy="
                                 "ttt.supervised('squared', noise) (noise is the start) and beta=1.")
            post = tune_prior_scales(fit, means, tuned, residuals, energy_fn.noise)
        else:
            post = tune_prior_scales(fit, means, tuned) if tuned else fit(scales)
    post.diagnostics["ttt"] = {"latents": list(trained), "independent": independent, "prior_mean": prior_mean}
    return post


def _forward_once(fn, values: dict):
    """The network at ``values`` as a function of its inputs that runs once per input tensor (the same memory, shape
    and strides): the energy and its natural parameters (``hessian="ggn"``) then share one forward pass and its
    graph."""
    outputs = {}

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        key = (inputs.data_ptr(), inputs.device, tuple(inputs.shape), inputs.stride())
        if key not in outputs:
            outputs[key] = fn(values, inputs)
        return outputs[key]

    return forward


def predict(net: nn.Module, posterior: Posterior, x: torch.Tensor, num_samples: int = 100,
            seed: int | None = None, *, likelihood: str = "classification", pred_type: str = "nn",
            link_approx: str = "probit", noise: float = 0.0):
    r"""Predictions averaged over the posterior of the adapted weights.

    Parameters
    ----------
    net, posterior, x
        The network, the posterior of :func:`adapt`, and the inputs to predict (for independent adaptation, one per
        adapted copy).
    num_samples, seed
        Monte Carlo draws (of weights for ``pred_type="nn"``, of outputs for ``link_approx="mc"``).
    likelihood : {"classification", "regression"}
        Classification returns class probabilities ``(B, C)``; regression returns ``(mean, variance)`` of the
        outputs, each ``(B, O)``, with ``noise**2`` added to the variance (the observation noise).
    pred_type : {"nn", "glm"}
        ``"nn"``: the network itself averaged over weight draws,
        :math:`\frac1S\sum_s \mathrm{softmax}(f_{\theta_s}(x))` (MAP: the plug-in). ``"glm"``: the network linearised at
        the posterior's centre, outputs :math:`\mathcal N(f_{\hat\theta}(x), J\Sigma J^\top)` (Laplace posteriors);
        see :mod:`pyebm.ttt.linearized`. Linearising keeps the predictions of a point estimate where weight samples
        through a non-linear network can wreck them.
    link_approx : {"probit", "bridge", "mc"}
        With ``pred_type="glm"`` and classification: how probabilities are read off the Gaussian logits.
    noise : float
        Regression: the observation noise's standard deviation.
    """
    info = posterior.diagnostics.get("ttt")
    if info is None:
        raise ValueError("posterior does not come from pyebm.ttt.adapt (no 'ttt' diagnostics).")
    if likelihood not in ("classification", "regression"):
        raise ValueError(f"likelihood must be 'classification' or 'regression', got {likelihood!r}.")
    if pred_type not in ("nn", "glm"):
        raise ValueError(f"pred_type must be 'nn' or 'glm', got {pred_type!r}.")
    if link_approx not in LINKS:
        raise ValueError(f"link_approx must be one of {sorted(LINKS)}, got {link_approx!r}.")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}.")
    if pred_type == "glm" and posterior.approximation.kind not in ("gaussian", "point"):
        raise ValueError(f"pred_type='glm' linearises around a Gaussian (method 'laplace' or 'map'); this posterior "
                         f"is from {posterior.method!r}: use pred_type='nn'.")
    params = dict(net.named_parameters())
    fn = Functional(net, {k: params[k].detach() for k in info["latents"]})
    seed = resolve_seed(seed)
    if pred_type == "glm":
        mean, cov = glm_outputs(fn, posterior, x, info["independent"])
        if likelihood == "regression":
            return mean, torch.diagonal(cov, dim1=-2, dim2=-1) + noise**2
        return LINKS[link_approx](mean, cov, num_samples, seed)
    if posterior.method == "map":
        draws = {k: v.unsqueeze(0) for k, v in posterior.mode.items()}
    else:
        draws = posterior.sample(num_samples, seed=seed)
    draws = {k: v.to(params[k].dtype) for k, v in draws.items()}
    with torch.no_grad():
        if info["independent"]:
            def one_input(values_b, x_b):  # values_b: (S, *shape) for this input
                return vmap(lambda v: fn(v, x_b.unsqueeze(0)).squeeze(0))(values_b)

            outputs = vmap(one_input, in_dims=(1, 0), out_dims=1)(draws, x)  # (S, B, C)
        else:
            outputs = vmap(lambda v: fn(v, x))(draws)  # (S, B, C)
    if likelihood == "regression":
        return outputs.mean(0), outputs.var(0, unbiased=False) + noise**2
    return torch.softmax(outputs, -1).mean(0)
