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

import torch

from .diagnostics import InferenceError, check_beta
from .energy import energy_dtype
from .infer.optimize import minimize
from .state import resolve_seed, seeded

__all__ = ["free_energy", "profile"]


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
        Inverse temperature, ``> 0``; ``float("inf")`` gives :math:`\min_z E`.
    method : {"laplace", "importance"}
        Continuous finite β only. ``"laplace"``: :math:`F_\beta \approx E(z^*) - \frac1\beta[\frac d2\log 2\pi
        - \frac12\log\det(\beta H)]` at the minimiser (exact for quadratic energies). ``"importance"``: importance
        sampling from that Laplace Gaussian, ``num_samples`` draws per batch element, a check on the Laplace
        error; its effective sample size is in the details.
    init : dict, optional
        Starting point of the minimisation (default zeros), shapes as the latents (batched or not).
    steps, tol :
        L-BFGS iterations and gradient tolerance (default 1e-9 in float64, 1e-4 in float32).
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
        return _discrete(energy, z, beta, return_details)
    if isinstance(z, Mapping):
        grad_wanted = torch.is_grad_enabled()
        with torch.enable_grad():  # the minimisation and the curvature need autograd in any case
            out = _continuous(energy, dict(z), beta, method, num_samples, init, steps, tol, seed, return_details)
        if grad_wanted:
            return out
        return (out[0].detach(), out[1]) if return_details else out.detach()
    raise TypeError(f"z must be a tensor of support points or a dict of latent shapes, got {type(z).__name__}.")


def _discrete(energy: Callable, z: torch.Tensor, beta: float, details: bool):
    if z.dim() == 0 or z.shape[0] == 0:
        raise ValueError("the discrete support z is empty; pass at least one support point along dim 0.")
    e = energy(z)
    if not isinstance(e, torch.Tensor) or e.dim() == 0 or e.shape[0] != z.shape[0]:
        shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
        raise ValueError(
            f"energy(z) must return shape (len(z), *batch) = ({z.shape[0]}, ...), got {shape}: put the support "
            "dimension first (e.g. ((x - centres[:, None]) ** 2).sum(-1))."
        )
    if bool(torch.isnan(e).any()):
        raise ValueError("energy(z) has NaN entries; the free energy would be NaN.")
    if math.isinf(beta):
        value = e.min(0).values
    else:
        value = -torch.logsumexp(-beta * e, 0) / beta
    return (value, {"energies": e}) if details else value


def _shape(s) -> torch.Size:
    return torch.Size([s]) if isinstance(s, int) else torch.Size(s)


def _continuous(energy, sites, beta, method, num_samples, init, steps, tol, seed, details):
    if not sites:
        raise ValueError("z is an empty dict; name at least one continuous latent, e.g. {'z': 2}.")
    if method not in ("laplace", "importance"):
        raise ValueError(f"unknown method {method!r}; choose 'laplace' or 'importance'.")
    shapes = {k: _shape(v) for k, v in sites.items()}
    dtype = energy_dtype(energy)
    # probe: unbatched zeros broadcast against x give the batch shape
    probe = energy(**{k: torch.zeros(s, dtype=dtype) for k, s in shapes.items()})
    if not isinstance(probe, torch.Tensor):
        raise TypeError(f"the energy must return a tensor, got {type(probe).__name__}.")
    batch = probe.shape
    sizes = [s.numel() for s in shapes.values()]
    d = sum(sizes)

    def unpack(u: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(u, sizes, dim=-1)
        return {k: p.reshape(batch + s) for (k, s), p in zip(shapes.items(), parts)}

    def batched(u: torch.Tensor) -> torch.Tensor:
        e = energy(**unpack(u))
        if e.shape != batch:
            raise ValueError(f"the energy returned shape {tuple(e.shape)} where the batch shape {tuple(batch)} is due.")
        return e

    start = torch.zeros(batch + (d,), dtype=dtype)
    if init is not None:
        start = torch.cat([torch.as_tensor(init[k], dtype=dtype).expand(batch + s).reshape(batch + (-1,))
                           for k, s in shapes.items()], -1)
    tol = (1e-9 if dtype == torch.float64 else 1e-4) if tol is None else tol
    res = minimize(lambda u: batched(u.reshape(batch + (d,))).sum(), start.reshape(-1).detach(), steps=steps,
                   tol=tol, desc="free energy (minimisation)")
    u_star = res.u.reshape(batch + (d,)).detach()
    info_out = {"z_star": unpack(u_star)}
    u_tilde, H = _newton_point(batched, u_star)
    if math.isinf(beta):
        if H is None:  # singular curvature: the envelope theorem still gives exact first derivatives
            u_tilde = u_star
        value = batched(u_tilde)
        return (value, info_out) if details else value
    if H is None or bool((torch.linalg.cholesky_ex(H.detach()).info != 0).any()):
        raise InferenceError(
            "free_energy: the Hessian at the minimum is not positive definite for some batch element(s): a "
            "saddle or a flat direction of the latent, where Laplace does not apply. Use a discrete support, "
            "or β = inf."
        )
    # curvature at the Newton point, with its graph: log det H moves with z* as well as with θ
    H = _hessian(batched, u_tilde, create_graph=True)[1]
    logdet = torch.linalg.slogdet(H)[1]
    log_z = -beta * batched(u_tilde) + 0.5 * d * math.log(2 * math.pi / beta) - 0.5 * logdet
    info_out["log_det_hessian"] = logdet.detach()
    if method == "importance":
        log_z, ess = _importance(batched, u_tilde, H, beta, num_samples, resolve_seed(seed))
        info_out["ess"] = ess
    value = -log_z / beta
    return (value, info_out) if details else value


def _hessian(batched: Callable, u: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient and per-element Hessian blocks (*batch, d, d) of the energy: d backward passes, any batch size
    (latents are independent across the batch, so the Hessian of the sum is block diagonal)."""
    with torch.enable_grad():
        if not u.requires_grad:
            u = u.requires_grad_(True)
        g = torch.autograd.grad(batched(u).sum(), u, create_graph=True)[0]
        cols = [torch.autograd.grad(g[..., j].sum(), u, create_graph=create_graph, retain_graph=True)[0]
                for j in range(u.shape[-1])]
    H = torch.stack(cols, -1)
    return g, 0.5 * (H + H.transpose(-1, -2))


def _newton_point(batched: Callable, u_star: torch.Tensor):
    r"""One Newton step from the detached minimiser: :math:`\tilde z = z^* - H^{-1}\nabla E`.

    Numerically :math:`\tilde z = z^*` (the gradient vanishes there), but as a function of the energy's
    parameters it carries the implicit derivative :math:`dz^*/d\theta = -H^{-1}\partial_\theta\nabla_z E`,
    which makes first and second derivatives of :math:`E(\tilde z)` those of :math:`\min_z E`.
    Returns ``(u_tilde, H)``, with ``H`` None where it is singular.
    """
    u0 = u_star.detach().requires_grad_(True)
    g, H = _hessian(batched, u0, create_graph=True)
    try:
        step = torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1)
    except RuntimeError:  # singular
        return u_star, None
    return u0 - step, H


def _importance(batched, loc, H, beta, n, seed):
    r"""log Z by importance sampling from the Laplace Gaussian :math:`\mathcal N(z^*, (\beta H)^{-1})`."""
    precision_chol = torch.linalg.cholesky(beta * H)  # L Lᵀ = βH, so draws are z* + L⁻ᵀ ε
    with seeded(seed):
        eps = torch.randn((n,) + loc.shape, dtype=loc.dtype)
    offset = torch.linalg.solve_triangular(precision_chol.transpose(-1, -2), eps.unsqueeze(-1), upper=True)
    draws = loc + offset.squeeze(-1)
    d = loc.shape[-1]
    log_q = (-0.5 * (eps**2).sum(-1) - 0.5 * d * math.log(2 * math.pi)
             + torch.log(torch.diagonal(precision_chol, dim1=-2, dim2=-1)).sum(-1))
    log_w = -beta * torch.stack([batched(draws[i]) for i in range(n)]) - log_q
    log_z = torch.logsumexp(log_w, 0) - math.log(n)
    w = torch.softmax(log_w.detach(), 0)
    return log_z, 1.0 / (w**2).sum(0)


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

    names = [sites] if isinstance(sites, str) else list(sites)
    beta = check_beta(beta, allow_zero=False, allow_inf=True)

    def profiled(*args, **kwargs):
        with poutine.block():
            proto = poutine.trace(model).get_trace(*args, **kwargs)
        latent = {k: n for k, n in proto.nodes.items()
                  if n["type"] == "sample" and not n["is_observed"] and not n["infer"].get("is_auxiliary")}
        missing = [k for k in names if k not in latent]
        if missing:
            raise ValueError(f"profile: {missing} are not latent sites of the model (latent sites: {list(latent)}).")
        for k in names:
            if latent[k]["fn"].support.is_discrete or not _is_real(latent[k]["fn"].support):
                raise ValueError(f"profile: site '{k}' must be continuous on the reals to be minimised or "
                                 "marginalised out; sum a discrete latent out with free_energy on its support.")
        # the remaining latents keep their support and shape; all of the log density goes into one factor
        values = {k: pyro.sample(k, n["fn"].mask(False)) for k, n in latent.items() if k not in names}

        def energy(**z):
            with poutine.block():
                tr = poutine.trace(poutine.condition(model, data={**values, **z})).get_trace(*args, **kwargs)
            return -tr.log_prob_sum()

        shapes = {k: tuple(latent[k]["value"].shape) for k in names}
        init = {k: latent[k]["value"].detach() for k in names}
        F = free_energy(energy, shapes, beta, init=options.pop("init", init), **options)
        pyro.factor("profile_" + "_".join(names), -F)

    return profiled


def _is_real(support) -> bool:
    from torch.distributions import constraints

    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real
