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

import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import Bernoulli, Categorical, Independent, Normal, Poisson

from ..ops import HVP_BUDGET
from .curvature import MAX_DENSE_BYTES
from .pyro_backend import conditioned_trace

__all__ = ["gauss_newton", "softmax_fisher", "KNOWN_LINKS"]

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
        fisher = softmax_fisher(logits)
        w = torch.as_tensor(weight, dtype=fisher.dtype, device=fisher.device)
        return [(logits, w[..., None, None] * fisher, True)]
    return None


def softmax_fisher(logits: torch.Tensor) -> torch.Tensor:
    r"""The Fisher information of a categorical in its logits, :math:`\mathrm{diag}(p) - pp^\top` per row
    ``(..., C, C)`` (the Hessian of the cross-entropy in the logits), without a graph."""
    p = torch.softmax(logits.detach(), -1)
    return torch.diag_embed(p) - p[..., :, None] * p[..., None, :]


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
    sites = potential.sites
    latent = {s.name for s in sites}  # conditioned on the point, so observed in the trace: priors, not observations

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

    with torch.enable_grad():  # one run of the model: the natural parameters and the rest, with their graphs
        v = u.detach().requires_grad_(True)
        unconstrained = potential.unpack(v)  # every site, held coordinates included
        trace, values = conditioned_trace(model, args, kwargs, sites, unconstrained)
        discrete = [n for n, nd in trace.nodes.items() if nd["type"] == "sample" and not nd["is_observed"]
                    and not isinstance(nd["fn"], _Subsample)]
        if discrete:
            raise ValueError(f"{what}: hessian='ggn' takes models whose latent sites are all continuous; {discrete} "
                             "would be drawn at random in the trace. Use hessian='full' (it sums them out).")
        parts = known(trace)
        if not parts:
            observed = [n for n, nd in trace.nodes.items() if nd["type"] == "sample" and nd["is_observed"]
                        and n not in latent]
            raise ValueError(
                f"{what}: hessian='ggn' needs an observed site (pyro.sample(..., obs=...)) of a family whose link it "
                f"knows ({', '.join(KNOWN_LINKS)}), or an energy factor that declares its natural parameters "
                f"(energy_factor(..., gauss_newton=...), as pyebm.ttt.supervised energies do); this model's observed "
                f"sites are {observed or 'none'}. Use hessian='full'.")
        rest = v.new_zeros(())
        for name, node in trace.nodes.items():
            if node["type"] == "sample" and name not in parts:
                rest = rest - node["fn"].log_prob(node["value"]).mul(_site_weight(node)).sum()
        for s in sites:
            if not s.on_reals:
                rest = rest - s.transform.log_abs_det_jacobian(unconstrained[s.name], values[s.name]).sum()
        eta = torch.cat([e.reshape(-1) for n in parts for e, _, _ in parts[n][0]])
        dim, m = v.shape[-1], eta.numel()
        _check_size(m, dim, v, what)
        ggn = _rows(rest, v, dim, rest_graph=True)  # the rest's exact Hessian: its gradient's graph, differentiated
        jac = _rows(eta, v, m)  # (M, D), one batched backward pass per chunk of outputs
    start = 0
    for pieces, weight in parts.values():
        for e, fisher, blocks in pieces:
            j = jac[start : start + e.numel()]
            start += e.numel()
            fisher = fisher.detach()
            if blocks:
                c = e.shape[-1]
                w = torch.as_tensor(weight, dtype=fisher.dtype, device=fisher.device)
                f = torch.broadcast_to(fisher * w[..., None, None], tuple(e.shape[:-1]) + (c, c)).reshape(-1, c, c)
                jb = j.reshape(-1, c, dim)
                ggn = ggn + torch.einsum("ncd,nce,nek->dk", jb, f, jb)
            else:
                f = torch.broadcast_to(fisher * weight, e.shape).reshape(-1, 1)
                ggn = ggn + j.T @ (f * j)
    return 0.5 * (ggn + ggn.T), list(parts)


def _rows(y: torch.Tensor, v: torch.Tensor, count: int, rest_graph: bool = False) -> torch.Tensor:
    """The Jacobian ``(count, D)`` of the vector ``y`` in ``v``, or with ``rest_graph`` the Hessian of the scalar
    ``y``: one batched backward pass per chunk of unit cotangents (memory: a chunk times the graph)."""
    if rest_graph:
        (y,) = torch.autograd.grad(y, v, create_graph=True, allow_unused=True)
        if y is None or not y.requires_grad:  # linear or constant in v: no curvature
            return v.new_zeros(count, count)
    out = v.new_empty(count, v.shape[-1])
    size = max(1, min(count, HVP_BUDGET // max(v.shape[-1], 1)))
    for first in range(0, count, size):
        k = min(size, count - first)
        cot = y.new_zeros(k, count)
        cot[torch.arange(k), torch.arange(first, first + k)] = 1.0
        (rows,) = torch.autograd.grad(y, v, grad_outputs=cot, is_grads_batched=True, retain_graph=True,
                                      allow_unused=True)
        out[first : first + k] = 0.0 if rows is None else rows.detach()
    return out


def _check_size(outputs: int, dim: int, like: torch.Tensor, what: str) -> None:
    """Refuse a Jacobian ``(outputs, D)`` or a GGN ``(D, D)`` above :data:`MAX_DENSE_BYTES`, before allocating."""
    need = max(outputs, dim) * dim * like.element_size()
    if need > MAX_DENSE_BYTES:
        raise MemoryError(f"{what}: hessian='ggn' needs a {outputs} x {dim} Jacobian and a {dim} x {dim} curvature, "
                          f"{need / 2**30:.1f} GiB (limit {MAX_DENSE_BYTES / 2**30:.0f} GiB); use fewer latents "
                          "(a last layer) or fewer observations.")
