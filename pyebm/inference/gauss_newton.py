r"""The generalised Gauss-Newton (GGN) curvature of a Pyro model's potential, for Laplace's ``hessian="ggn"``.

The potential splits into the observation terms whose link is known and the rest (the priors of the latent sites,
factors, observations of other families, the change of variables):
:math:`U(u) = \sum_i \ell_i(\eta_i(u)) + R(u)`, with :math:`\eta_i` the natural parameter of observation :math:`i`
(a Normal's mean and log scale, a Bernoulli's or Categorical's logits, a Poisson's log rate) and :math:`\ell_i` its
negative log likelihood; an energy factor that declares its natural parameters and its curvature in them
(:func:`pyebm.energy_factor`'s ``gauss_newton``, as :func:`pyebm.ttt.supervised` energies do) counts as one. The
GGN keeps the curvature of the loss in the natural parameters and drops that of the map
:math:`u \mapsto \eta` (Schraudolph 2002; Martens 2020):

.. math:: G = J^\top \Lambda J + \nabla^2 R, \qquad J = \partial\eta/\partial u, \qquad
          \Lambda = \nabla^2_\eta \textstyle\sum_i \ell_i ,

where :math:`\Lambda` is the Fisher information of each family in its natural parameter (for these links the
expected and the observed Hessian coincide; for the Normal's log scale the Fisher's 2 is used): positive
semi-definite whatever the network, so :math:`G` is positive definite wherever the prior is proper, unlike the exact
Hessian at weights that are not exactly a minimum. For a model linear in :math:`u` (a last layer, a GLM)
:math:`G` is the exact Hessian. :math:`\nabla^2 R` is exact. This is laplace-torch's default curvature.
"""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from torch.distributions import Bernoulli, Categorical, Independent, Normal, Poisson

from .curvature import check_dense_size

__all__ = ["gauss_newton", "KNOWN_LINKS"]

#: observation families whose natural parameter and Fisher information the GGN knows
KNOWN_LINKS = ("Normal", "Bernoulli", "Categorical", "Poisson")


def _natural(fn) -> list[tuple[torch.Tensor, torch.Tensor, bool]] | None:
    """The natural parameters of an observation distribution, each broadcast to the shape of its observations, with
    their Fisher information (elementwise, or ``(..., C, C)`` blocks where ``blocks``); None for other families."""
    weight = 1.0
    while isinstance(fn, (Independent, MaskedDistribution)):
        if isinstance(fn, MaskedDistribution):
            weight = weight * fn._mask
        fn = fn.base_dist
    shape = tuple(fn.batch_shape) + tuple(fn.event_shape)

    def full(t):
        return torch.broadcast_to(t, shape)

    if isinstance(fn, Normal):
        w = full(torch.as_tensor(weight, dtype=fn.loc.dtype, device=fn.loc.device))
        return [(full(fn.loc), w / full(fn.scale).detach() ** 2, False), (full(fn.scale.log()), 2.0 * w, False)]
    if isinstance(fn, Poisson):
        rate = full(fn.rate)
        return [(rate.log(), weight * rate.detach(), False)]
    if isinstance(fn, Bernoulli):
        logits = full(fn.logits)
        p = torch.sigmoid(logits.detach())
        return [(logits, weight * p * (1 - p), False)]
    if isinstance(fn, Categorical):
        logits = torch.broadcast_to(fn.logits, tuple(fn.batch_shape) + tuple(fn.logits.shape[-1:]))
        p = torch.softmax(logits.detach(), -1)
        fisher = torch.diag_embed(p) - p[..., :, None] * p[..., None, :]
        w = torch.as_tensor(weight, dtype=p.dtype, device=p.device)
        return [(logits, w[..., None, None] * fisher, True)]
    return None


def _site_weight(node) -> torch.Tensor | float:
    """The site's own scale (subsampling) and mask (``poutine.mask``)."""
    w = node["scale"]
    if node.get("mask") is not None:
        w = w * node["mask"]
    return w


def gauss_newton(model, args: tuple, kwargs: dict, potential, u: torch.Tensor, what: str = "Laplace"):
    """The dense GGN ``(D, D)`` of the potential of ``model(*args, **kwargs)`` at the point ``u`` (``(D,)``,
    unconstrained) and the names of the observation sites whose link it used. A ValueError says why where the model
    has no observation of a known family."""
    from .potential import Restricted

    sites = potential.sites
    latent = {s.name for s in sites}  # conditioned on the point, so observed in the trace: priors, not observations
    full_point = potential.expand if isinstance(potential, Restricted) else (lambda v: v)

    def trace_at(v):
        unconstrained, start = {}, 0
        w = full_point(v)
        for s in sites:
            unconstrained[s.name] = w[start : start + s.numel].reshape(s.unconstrained_shape)
            start += s.numel
        values = {s.name: s.transform(unconstrained[s.name]) for s in sites}
        with pyro.validation_enabled(False), poutine.block():
            trace = poutine.trace(poutine.condition(model, values)).get_trace(*args, **kwargs)
        return trace, unconstrained, values

    def known(trace) -> dict:
        out = {}
        for name, node in trace.nodes.items():
            if node["type"] == "sample" and node["is_observed"] and name not in latent:
                declared = (node.get("infer") or {}).get("ggn")
                if declared is not None:  # an energy factor that gives its natural parameters (energy_factor)
                    fn, beta = declared
                    out[name] = (fn(), beta * _site_weight(node))
                    continue
                parts = _natural(node["fn"])
                if parts is not None:
                    out[name] = (parts, _site_weight(node))
        return out

    with torch.no_grad():
        trace, _, _ = trace_at(u)
        at_u = known(trace)
    if not at_u:
        observed = [n for n, nd in trace.nodes.items() if nd["type"] == "sample" and nd["is_observed"]]
        raise ValueError(
            f"{what}: hessian='ggn' needs an observed site (pyro.sample(..., obs=...)) of a family whose link it knows "
            f"({', '.join(KNOWN_LINKS)}), or an energy factor that declares its natural parameters "
            f"(energy_factor(..., gauss_newton=...), as pyebm.ttt.supervised energies do); this model's observed "
            f"sites are {observed or 'none'}. Use hessian='full'.")
    names = list(at_u)

    def eta(v):
        parts = known(trace_at(v)[0])
        return torch.cat([e.reshape(-1) for n in names for e, _, _ in parts[n][0]])

    def rest(v):
        trace, unconstrained, values = trace_at(v)
        total = v.new_zeros(())
        for name, node in trace.nodes.items():
            if node["type"] == "sample" and name not in at_u:
                total = total - node["fn"].log_prob(node["value"]).mul(_site_weight(node)).sum()
        for s in sites:
            if not s.on_reals:
                total = total - s.transform.log_abs_det_jacobian(unconstrained[s.name], values[s.name]).sum()
        return total

    m = sum(int(e.numel()) for n in names for e, _, _ in at_u[n][0])
    check_dense_size(max(m, u.shape[-1]), 1, u.element_size(), f"{what} (hessian='ggn', {m} outputs)")
    with torch.no_grad():
        jac = torch.func.jacrev(eta)(u)  # (M, D)
        ggn = torch.func.hessian(rest)(u)
        start = 0
        for n in names:
            for e, fisher, blocks in at_u[n][0]:
                j = jac[start : start + e.numel()]
                start += e.numel()
                weight = at_u[n][1]
                if blocks:
                    c = e.shape[-1]
                    f = torch.broadcast_to(fisher * torch.as_tensor(weight)[..., None, None] if torch.is_tensor(weight)
                                           else fisher * weight, tuple(e.shape[:-1]) + (c, c)).reshape(-1, c, c)
                    jb = j.reshape(-1, c, j.shape[-1])
                    ggn = ggn + torch.einsum("ncd,nce,nek->dk", jb, f, jb)
                else:
                    f = torch.broadcast_to(fisher * weight, e.shape).reshape(-1, 1)
                    ggn = ggn + j.T @ (f * j)
    return 0.5 * (ggn + ggn.T), names
