r"""Latent variables: minimise them out or marginalise them out, with the temperature as the knob.

For an energy :math:`E(z)` over a latent :math:`z` (usually also a function of observed :math:`x`),

.. math:: F_\beta = -\frac1\beta \log \int e^{-\beta E(z)}\,dz \quad(\text{a sum for discrete } z),
          \qquad F_\infty = \min_z E(z) .

:math:`F_\infty` is the k-means view (distance to the nearest centre), finite :math:`\beta` the mixture view
(a log-sum over components). For discrete support :math:`F_\infty - \log K/\beta \le F_\beta \le F_\infty`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

from .diagnostics import InferenceError, check_beta
from .energy import energy_device, energy_dtype
from .inference.curvature import positive_definite
from .inference.minimize import minimize
from .ops import TORCH, ArrayOps
from .state import resolve_seed

__all__ = ["free_energy", "profile", "discrete_free_energy", "continuous_free_energy"]


def free_energy(
    energy: Callable,
    z: torch.Tensor | Mapping[str, int | tuple],
    beta: float = 1.0,
    *,
    method: str = "laplace",
    num_samples: int = 1000,
    init: Mapping[str, torch.Tensor] | None = None,
    steps: int = 500,
    tol: float | None = None,
    seed: int | None = None,
    return_details: bool = False,
):
    r"""The free energy :math:`F_\beta = -\frac1\beta\log\int e^{-\beta E(z)}dz` of a latent variable.

    Parameters
    ----------
    energy : callable
        Discrete ``z``: called as ``energy(z)`` with the support points (along dim 0), returns energies of
        shape ``(len(z), *batch)``. Continuous ``z``: called with each latent as a keyword argument, values of
        shape ``(*batch, *site_shape)``, returns energies of shape ``batch`` (one independent latent per batch
        element: e.g. one code per data point).
    z : tensor or dict
        A tensor of discrete support points (exact, numerically stable logsumexp), or a dict
        ``{name: shape}`` of continuous latents on the reals.
    beta : float
        Inverse temperature, ``> 0``; ``float("inf")`` gives :math:`\min_z E`. Any finite β is stable: energies
        enter relative to their minimum.
    method : {"laplace", "importance"}
        Continuous finite β only. ``"laplace"``: :math:`F_\beta \approx E(z^*) - \frac1\beta[\frac d2\log 2\pi
        - \frac12\log\det(\beta H)]` at the minimiser (exact for quadratic energies). ``"importance"``: importance
        sampling from that Laplace Gaussian, ``num_samples`` draws per batch element, a check on the Laplace
        error; its effective sample size is in the details.
    init : dict, optional
        Starting point of the minimisation (default zeros), shapes as the latents (batched or not).
    steps, tol :
        Iterations and the convergence tolerance of each batch element's minimisation (distance to its minimum in
        standard deviations of the latent's Laplace Gaussian; :func:`pyebm.inference.minimize.default_tol`). Each
        element converges on its own; any that does not is named in the error.
    seed : int, optional
        For ``method="importance"``.
    return_details : bool
        Also return a dict: the minimiser ``z_star``, ``log_det_hessian`` and, for importance sampling, ``ess``.

    Returns
    -------
    tensor of the batch shape (and the details dict if asked)

    Gradients with respect to the energy's parameters are exact: at the minimum, the envelope theorem for
    :math:`E(z^*)`, and implicit differentiation (one Newton step from the detached minimiser) for the
    curvature term. Under ``torch.no_grad()`` the result is returned detached.

    Examples
    --------
    >>> centres = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    >>> x = torch.randn(5, 2)
    >>> E = lambda c: ((x - c[:, None]) ** 2).sum(-1)        # (K, N)
    >>> free_energy(E, centres, beta=float("inf")).shape      # k-means: squared distance to the nearest
    torch.Size([5])
    """
    beta = check_beta(beta, allow_zero=False, allow_inf=True)
    if isinstance(z, torch.Tensor):
        value, e = discrete_free_energy(energy, z, beta, TORCH)
        return (value, {"energies": e}) if return_details else value
    if isinstance(z, Mapping):
        grad_wanted = torch.is_grad_enabled()
        with torch.enable_grad():  # the minimisation and the curvature need autograd in any case
            out = _continuous(energy, dict(z), beta, method, num_samples, init, steps, tol, seed)
        value, info = out if grad_wanted else (out[0].detach(), out[1])
        return (value, info) if return_details else value
    raise TypeError(f"z must be a tensor of support points or a dict of latent shapes, got {type(z).__name__}.")


def discrete_free_energy(energy: Callable, z, beta: float, ops: ArrayOps):
    """The exact free energy over support points ``z`` (dim 0), relative to the minimum energy so that any β is
    stable; returns ``(F, energies)``. Written once for both backends."""
    if z.ndim == 0 or z.shape[0] == 0:
        raise ValueError("the discrete support z is empty; pass at least one support point along dim 0.")
    e = energy(z)
    if not hasattr(e, "shape") or len(e.shape) == 0 or e.shape[0] != z.shape[0]:
        shape = tuple(e.shape) if hasattr(e, "shape") else type(e).__name__
        raise ValueError(
            f"energy(z) must return shape (len(z), *batch) = ({z.shape[0]}, ...), got {shape}: put the support "
            "dimension first (e.g. ((x - centres[:, None]) ** 2).sum(-1))."
        )
    if bool(np.isnan(ops.to_numpy(e)).any()):
        raise ValueError("energy(z) has NaN entries; the free energy would be NaN.")
    low = ops.amin(e, 0)
    if math.isinf(beta):
        return low, e
    return low - ops.logsumexp(-beta * (e - low), 0) / beta, e


def _continuous(energy, sites, beta, method, num_samples, init, steps, tol, seed, like=None):
    """``like``: a tensor with the energy's batch shape, dtype and device when known (else the energy is probed)."""
    if not sites:
        raise ValueError("z is an empty dict; name at least one continuous latent, e.g. {'z': 2}.")
    shapes = {k: torch.Size([v]) if isinstance(v, int) else torch.Size(v) for k, v in sites.items()}
    if like is None:  # probe: unbatched zeros broadcast against x give the batch shape
        like = energy(**{k: torch.zeros(s, dtype=energy_dtype(energy), device=energy_device(energy))
                          for k, s in shapes.items()})
        if not isinstance(like, torch.Tensor):
            raise TypeError(f"the energy must return a tensor, got {type(like).__name__}.")
    batch, device, dtype = like.shape, like.device, like.dtype
    sizes = [s.numel() for s in shapes.values()]
    d, n = sum(sizes), max(1, batch.numel())

    def unpack(u: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(u.reshape(batch + (d,)), sizes, dim=-1)
        return {k: p.reshape(batch + s) for (k, s), p in zip(shapes.items(), parts)}

    def batched(u: torch.Tensor) -> torch.Tensor:
        e = energy(**unpack(u))
        if e.shape != batch:
            raise ValueError(f"the energy returned shape {tuple(e.shape)} where the batch shape {tuple(batch)} is due.")
        return e.reshape(n)

    start = torch.zeros(batch + (d,), dtype=dtype, device=device)
    if init is not None:
        start = torch.cat([torch.as_tensor(init[k], dtype=dtype, device=device).expand(batch + s).reshape(batch + (-1,))
                           for k, s in shapes.items()], -1)
    value, info = continuous_free_energy(batched, start.reshape(n, d), beta, ops=TORCH, method=method,
                                         num_samples=num_samples, steps=steps, tol=tol, seed=seed)
    details = {"z_star": unpack(info["u_star"]), "log_det_hessian": info.get("log_det_hessian")}
    if details["log_det_hessian"] is not None:
        details["log_det_hessian"] = details["log_det_hessian"].reshape(batch)
    if "ess" in info:
        details["ess"] = info["ess"].reshape(batch)
    return value.reshape(batch), details


def continuous_free_energy(batched: Callable, start, beta: float, *, ops: ArrayOps, method: str = "laplace",
                           num_samples: int = 1000, steps: int = 500, tol: float | None = None,
                           seed: int | None = None):
    r"""The free energy of ``N`` independent continuous latents, written once for both backends.

    ``batched(u)`` maps ``(N, d)`` to energies ``(N,)``. Each row is minimised on its own (:func:`minimize`, with
    per-row Newton verification); then, at the minimiser :math:`z^*` and its Hessian :math:`H`, one Newton step
    :math:`\tilde z = z^* - H^{-1}\nabla E` (numerically :math:`z^*`, but carrying the implicit derivative
    :math:`dz^*/d\theta`) gives exact gradients with respect to what the energy closes over. Returns
    ``(F (N,), info)`` with ``u_star`` and, at finite β, ``log_det_hessian`` (and ``ess`` for importance sampling).
    """
    if method not in ("laplace", "importance"):
        raise ValueError(f"unknown method {method!r}; choose 'laplace' or 'importance'.")
    res = minimize(ops.value_and_grad(batched), ops.detach(start), ops=ops, hessian=lambda u: ops.hessian(batched, u),
                   verify=not math.isinf(beta), steps=steps, tol=tol, desc="free energy (minimisation)")
    failed = ~np.isin(res.status, ("converged", "stalled")) if math.isinf(beta) else res.status != "converged"
    if math.isinf(beta):
        failed &= res.status != "indefinite"  # a flat minimum is still the minimum value
    failed |= (res.status == "stalled") & (res.distance > 1e-2)
    if failed.any():
        rows = np.flatnonzero(failed)
        kinds = ", ".join(f"{k}: {int((res.status[rows] == k).sum())}" for k in np.unique(res.status[rows]))
        raise InferenceError(
            f"free_energy: the minimisation over the latent failed for {len(rows)} of {len(res.status)} batch "
            f"element(s) (flat indices {rows[:8].tolist()}{' ...' if len(rows) > 8 else ''}; {kinds}). Pass `init` "
            "closer to the minimum, raise `steps`, or check the energy there; a non-positive-definite curvature "
            "means Laplace does not apply: use a discrete support or beta = inf."
        )
    u_star = ops.detach(res.u)
    g, H = ops.grad_and_hessian(batched, u_star)
    info = {"u_star": u_star}
    if math.isinf(beta):
        # where the curvature is singular, z* itself: the envelope theorem still gives exact first derivatives
        L, ok = ops.cholesky(H)
        ok = ops.asarray(ops.to_numpy(ok), u_star) > 0.5
        safe = ops.where(ok[:, None, None], L, ops.eye(H.shape[-1], u_star))
        step = ops.cho_solve(safe, g[..., None])[..., 0]
        return batched(u_star - ops.where(ok[:, None], step, step * 0)), info
    u_tilde = u_star - positive_definite(H, ops, what="free_energy").solve(g)
    _, H_tilde = ops.grad_and_hessian(batched, u_tilde)  # the curvature moves with z* as well as with θ
    curvature = positive_definite(H_tilde, ops, what="free_energy")
    d = u_star.shape[-1]
    logdet = curvature.logdet_precision()
    e_tilde = batched(u_tilde)
    # log Z = -beta E(z~) + log_rest, kept apart so that no beta * E is formed: stable for any finite beta
    log_rest = 0.5 * d * math.log(2 * math.pi / beta) - 0.5 * logdet
    info["log_det_hessian"] = ops.detach(logdet)
    if method == "importance":
        log_rest, info["ess"] = _importance(batched, u_tilde, e_tilde, curvature, beta, num_samples,
                                            resolve_seed(seed), ops)
    return e_tilde - log_rest / beta, info


def _importance(batched, loc, e_loc, curvature, beta, n, seed, ops):
    r""":math:`\log Z + \beta E(z^*)` by importance sampling from the Laplace Gaussian
    :math:`\mathcal N(z^*, (\beta H)^{-1})` (energies relative to the centre's), and the effective sample size."""
    d = loc.shape[-1]
    eps = ops.normal(seed, (n,) + tuple(loc.shape), ops.detach(loc))
    draws = loc + curvature.sample(eps) / math.sqrt(beta)
    log_q = (-0.5 * ops.sum(eps * eps, -1) - 0.5 * d * math.log(2 * math.pi)
             + 0.5 * (curvature.logdet_precision() + d * math.log(beta)))
    log_w = -beta * (ops.stack([batched(draws[i]) for i in range(n)]) - e_loc) - log_q
    w = ops.exp(ops.detach(log_w - ops.logsumexp(log_w, 0)))
    return ops.logsumexp(log_w, 0) - math.log(n), 1.0 / ops.sum(w * w, 0)


def profile(model: Callable, sites: str | list[str], beta: float = float("inf"), **options) -> Callable:
    r"""A model in which the latent ``sites`` are minimised out (β = ∞) or marginalised out (finite β).

    With :math:`U(\theta, z) = -\log p(x, \theta, z)` the model's energy, the returned model has only the
    remaining latents :math:`\theta` and the density :math:`\exp(-F_\beta(\theta))`, where

    .. math:: F_\beta(\theta) = -\frac1\beta \log \int e^{-\beta U(\theta, z)}\,dz ,

    so β = 1 gives the marginal :math:`p(x, \theta)` (Laplace in :math:`z`: exact when :math:`z` enters
    quadratically) and β = ∞ the profile :math:`\max_z p(x, \theta, z)`. Any method of :func:`pyebm.infer`
    then runs on :math:`\theta` alone. Leaving a site out of ``sites`` keeps it sampled.

    The inner model runs hidden from outer handlers: to temper its energy factors, temper the model
    before profiling, ``profile(temper(model, b), ...)``. Profiled sites must live on the reals.

    Parameters
    ----------
    model : callable
        A Pyro model.
    sites : str or list of str
        Latent sites to remove.
    beta : float
        Inverse temperature of the removal, ``> 0`` (``inf``: minimise).
    **options
        Passed to :func:`free_energy` (``method``, ``num_samples``, ``steps``, ``tol``).
    """
    import pyro
    import pyro.poutine as poutine
    from pyro.poutine.util import site_is_subsample

    names = [sites] if isinstance(sites, str) else list(sites)
    beta = check_beta(beta, allow_zero=False, allow_inf=True)
    warm: dict = {}  # the last inner minimiser: the next evaluation, a nearby outer point, starts there
    layouts: dict = {}  # per call (the same argument objects): the model's structure, traced once

    def layout(args, kwargs):
        key = tuple(map(id, args)) + tuple((k, id(v)) for k, v in sorted(kwargs.items()))
        if key not in layouts:
            with poutine.block(), pyro.validation_enabled(False):
                proto = poutine.trace(model).get_trace(*args, **kwargs)
            latent = {k: n for k, n in proto.nodes.items()
                      if n["type"] == "sample" and not n["is_observed"] and not n["infer"].get("is_auxiliary")
                      and not site_is_subsample(n)}
            missing = [k for k in names if k not in latent]
            if missing:
                raise ValueError(f"profile: {missing} are not latent sites of the model (latent sites: "
                                 f"{list(latent)}).")
            for k in names:
                if latent[k]["fn"].support.is_discrete or not _is_real(latent[k]["fn"].support):
                    raise ValueError(f"profile: site '{k}' must be continuous on the reals to be minimised or "
                                     "marginalised out; sum a discrete latent out with free_energy on its support.")
            # the remaining latents keep their support and shape (plate dimensions become event dimensions)
            kept = {k: n["fn"].to_event(len(n["fn"].batch_shape)).mask(False) for k, n in latent.items()
                    if k not in names}
            start = {k: latent[k]["value"].detach() for k in names}
            like = -proto.log_prob_sum().detach()
            layouts.clear()  # one entry: a new call replaces the last (and the arguments it holds)
            layouts[key] = (args, kwargs, kept, start, like)
        return layouts[key][2:]

    def profiled(*args, **kwargs):
        kept, start, like = layout(args, kwargs)
        values = {k: pyro.sample(k, d) for k, d in kept.items()}  # all of the log density goes into one factor

        def energy(**z):
            with poutine.block():
                tr = poutine.trace(poutine.condition(model, data={**values, **z})).get_trace(*args, **kwargs)
            return -tr.log_prob_sum()

        shapes = {k: tuple(v.shape) for k, v in start.items()}
        init = options.get("init") or (dict(warm) if warm else start)
        inner = {"method": "laplace", "num_samples": 1000, "steps": 100, "tol": None, "seed": None,
                 **{k: v for k, v in options.items() if k != "init"}}
        try:
            with torch.enable_grad():
                F, details = _continuous(energy, shapes, beta, init=init, like=like, **inner)
        except InferenceError:  # no inner minimum here: zero density (inside a sampler, a rejected proposal)
            # still a function of the outer latents, so that a sampler can take its (zero) gradient
            F = float("inf") + sum(0.0 * v.sum() for v in values.values())
        else:
            warm.update({k: v.detach() for k, v in details["z_star"].items()})
        pyro.factor("profile_" + "_".join(names), -F)

    return profiled


def _is_real(support) -> bool:
    from torch.distributions import constraints

    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real
