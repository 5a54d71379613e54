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

import contextlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import Bernoulli, Categorical, Independent, Normal, Poisson

from ..ops import HVP_BUDGET
from .curvature import MAX_DENSE_BYTES, check_dense_size, positive_definite, positive_diagonal
from .factored import LowRank
from .pyro_backend import conditioned_trace, given_point_graph, nonfinite_point

__all__ = ["gauss_newton", "given_point_run", "GraphRun", "softmax_curvature", "KNOWN_LINKS"]

#: observation families whose natural parameter and Fisher information the GGN knows
KNOWN_LINKS = ("Normal", "Bernoulli", "Categorical", "Poisson")


def _natural(fn) -> list[tuple[torch.Tensor, torch.Tensor, bool]] | None:
    """The natural parameters of an observation distribution, each broadcast to the shape of its observations, with
    their Fisher information (elementwise, ``(..., C, C)`` blocks where ``blocks`` is True, or a categorical's weighted
    probabilities where it is ``"softmax"``); None for other families."""
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
        p, blocks = softmax_curvature(logits)
        w = torch.as_tensor(weight, dtype=p.dtype, device=p.device)
        return [(logits, w[..., None] * p, blocks)]
    return None


def softmax_curvature(logits: torch.Tensor) -> tuple[torch.Tensor, str]:
    r"""The curvature of the cross-entropy in the logits as a natural-parameter declaration takes it: the
    probabilities ``(..., C)`` (without a graph) and ``"softmax"``, which stands for the Fisher
    :math:`\mathrm{diag}(p) - pp^\top` per row, whose square-root rows are known in closed form
    (:math:`\sqrt{p_j}\,(e_j - p)`, :class:`Roots`): no ``C x C`` matrix per example, no eigendecomposition."""
    return torch.softmax(logits.detach(), -1), "softmax"


def _site_weight(node) -> torch.Tensor | float:
    """The site's own scale (subsampling) and mask (``poutine.mask``)."""
    w = node["scale"]
    if node.get("mask") is not None:
        w = w * node["mask"]
    return w


@dataclass
class GraphRun:
    """A run of the model at a given point that the GGN reads instead of running the model again: its trace, whose
    latent values are slices of the leaf ``v``, and the layer calls ``recorder`` saw."""

    v: torch.Tensor
    trace: object
    recorder: object


def given_point_run(model, args: tuple, kwargs: dict, at: dict, what: str = "Laplace"):
    """``(potential, run)``: the potential at the given point ``at`` from one run of the model, and that run as a
    :class:`GraphRun` for the GGN to read (None where it cannot serve: the GGN then runs the model itself; see
    :func:`~pyebm.inference.pyro_backend.given_point_graph`). None where ``at`` is not the whole point. The potential's
    trace holds the run's graph: let it go once read."""
    from .kfac import LayerRecorder

    recorder = LayerRecorder()
    with torch.enable_grad(), recorder:
        found = given_point_graph(model, args, kwargs, at, what)
    if found is None:
        return None
    potential, v = found
    return potential, None if v is None else GraphRun(v, potential.trace, recorder)


def gauss_newton(model, args: tuple, kwargs: dict, potential, u: torch.Tensor, what: str = "Laplace",
                 structure: str = "full", rank: int = 100, labels: list[str] | None = None, value: bool = False,
                 run: GraphRun | None = None):
    r"""The GGN of the potential of ``model(*args, **kwargs)`` at the point ``u`` (``(D,)``, unconstrained) in a
    ``structure`` (a :class:`~pyebm.inference.curvature.Structure`, checked positive definite), the names of the
    observation sites whose link it used, and, where ``value``, the potential and its gradient at ``u`` (``(1,)``,
    ``(1, D)``: from the same run of the model; else None). A ValueError says why where the model has no observation
    of a known family.

    ``"full"``: dense ``D x D``; ``"diag"``: its diagonal (memory: a chunk of rows times D); ``"lowrank"``: the top
    ``rank`` eigenpairs of :math:`J^\top\Lambda J` plus the diagonal of the rest's curvature; ``"kron"``: K-FAC
    blocks per ``nn.Linear`` and ``nn.Conv2d`` layer (:mod:`pyebm.inference.kfac`). Where every coordinate is the
    weight or bias of an ``nn.Linear`` called once per example and the examples are independent, the Jacobian rows
    (and the diagonal) come from the layers' per-example pullbacks, one backward pass per root of an example
    (:func:`~pyebm.inference.kfac.layer_rows`, :func:`~pyebm.inference.kfac.layer_diagonal`); otherwise from one
    backward pass per root. ``run``: the model's run at ``u`` to read (:func:`given_point_run`) instead of running it;
    the energy there is then computed (as with ``value``) and checked finite.
    """
    from .kfac import LayerRecorder, _coordinates, _segments, kronecker, layer_diagonal, layer_rows

    recorder = LayerRecorder() if run is None else run.recorder
    value = value or run is not None
    with torch.enable_grad(), recorder if run is None else contextlib.nullcontext():  # one run, its graphs kept
        if run is None:
            v = u.detach().requires_grad_(True)
            unconstrained = potential.unpack(v)  # every site, held coordinates included
            trace, values = conditioned_trace(model, args, kwargs, potential.sites, unconstrained)
        else:  # every site on the reals: its value is its unconstrained value
            v, trace = run.v, run.trace
            values = unconstrained = {s.name: trace.nodes[s.name]["value"] for s in potential.sites}
        parts = _known_links(trace, {s.name for s in potential.sites}, what)
        coords = _coordinates(potential, v)
        where = coords if getattr(potential, "index", None) is not None else _segments(potential.sites)
        # the latents' fixed Normal priors in closed form: their curvature and locations on their coordinates (zero
        # elsewhere), and their normalisers summed
        known, loc, normaliser = v.new_zeros(v.shape[-1]), None, 0.0
        # rest: the terms whose curvature autograd takes; elsewhere: those whose curvature is known (the links'
        # Fisher), needed only for the potential's value
        rest, elsewhere = v.new_zeros(()), v.new_zeros(())
        for name, node in trace.nodes.items():
            if node["type"] != "sample":
                continue
            prior = _fixed_normal_prior(node) if coords.get(name) is not None else None
            if prior is not None:  # every element free: the site's value is v at its coordinates
                known[where[name]] = prior.curvature if isinstance(prior.curvature, float) else \
                    prior.curvature.reshape(-1)
                if value:
                    loc = v.new_zeros(v.shape[-1]) if loc is None else loc
                    loc[where[name]] = torch.broadcast_to(prior.loc, node["value"].shape).reshape(-1)
                    normaliser = normaliser + prior.log_normaliser
            elif value or name not in parts:
                term = node["fn"].log_prob(node["value"]).mul(_site_weight(node)).sum()
                if name in parts:
                    elsewhere = elsewhere - term
                else:
                    rest = rest - term
        for s in potential.sites:
            if not s.on_reals:
                rest = rest - s.transform.log_abs_det_jacobian(unconstrained[s.name], values[s.name]).sum()
        energy = None
        if value:  # the priors' energy in one expression of v: one node of the graph, not a few per site
            energy = rest + elsewhere + (0.0 if loc is None else 0.5 * (known * (v - loc) ** 2).sum() + normaliser)
            if run is not None and not bool(torch.isfinite(energy)):
                raise nonfinite_point(model, args, kwargs, values, what)
        roots = Roots(parts)
        dim = v.shape[-1]
        if structure == "full":
            check_dense_size(dim, 1, v.element_size(), what)
            ggn = _hessian(rest, v)  # the rest's exact curvature
            ggn.diagonal().add_(known)
            for rows in layer_rows(recorder, trace, potential, v, roots) or roots.jacobian_rows(v):
                ggn.addmm_(rows.T, rows)
            ggn = positive_definite(0.5 * (ggn + ggn.T), potential.ops, what=what, labels=labels)
            return ggn, list(parts), _value_and_grad(energy, v)
        rest_diag = rest_diagonal(rest, v, exact=structure == "diag", what=what) + known
        if structure == "kron":  # its probe may take the observations' part of the gradient
            kron, grad = kronecker(recorder, trace, potential, v, roots, rest_diag, what, elsewhere if value else None)
            if grad is not None:  # the priors' part in closed form, the rest's by autograd
                if loc is not None:
                    grad = grad + known * (v.detach() - loc)
                if rest.requires_grad:
                    (more,) = torch.autograd.grad(rest, v, retain_graph=True, allow_unused=True)
                    grad = grad if more is None else grad + more
            return kron, list(parts), _value_and_grad(energy, v, grad)
        if structure == "diag":
            data = layer_diagonal(recorder, trace, potential, v, roots)
            if data is None:
                data = sum((rows**2).sum(0) for rows in roots.jacobian_rows(v))
            rest_diag = rest_diag + data
            return positive_diagonal(rest_diag, potential.ops, what, labels), list(parts), _value_and_grad(energy, v)
        rows = layer_rows(recorder, trace, potential, v, roots) or roots.jacobian_rows(v)
        return (_low_rank(roots.count, rows, v, rest_diag, rank, potential.ops, what, labels), list(parts),
                _value_and_grad(energy, v))


def _value_and_grad(energy: torch.Tensor | None, v: torch.Tensor, grad: torch.Tensor | None = None):
    """``(energy (1,), gradient (1, D))`` of the potential ``energy`` (a graph in ``v``; its gradient taken here
    unless given); None without it."""
    if energy is None:
        return None
    if grad is None:
        (grad,) = torch.autograd.grad(energy, v, retain_graph=True)
    return energy.detach().reshape(1), grad[None]


class _FixedNormal(NamedTuple):
    """A latent site's prior that is a Normal with fixed location and scale: its curvature (its weight over the
    variance: one number where the scale is one number broadcast, else elementwise in the site's shape), its
    location, and the log of its normaliser summed over the elements."""

    curvature: float | torch.Tensor
    loc: torch.Tensor
    log_normaliser: float | torch.Tensor


def _fixed_normal_prior(node) -> _FixedNormal | None:
    """The prior of a latent site (its node in a trace where the latents have values) where it is a Normal whose
    location and scale are fixed (they carry no gradient: no other latent, no learnable parameter), its curvature then
    known in closed form; None for any other prior (its curvature is then taken by autograd with the rest)."""
    fn, w = node["fn"], _site_weight(node)
    while isinstance(fn, (Independent, MaskedDistribution)):
        if isinstance(fn, MaskedDistribution):
            w = w * fn._mask
        fn = fn.base_dist
    if (not isinstance(fn, Normal) or type(fn).log_prob is not Normal.log_prob or fn.loc.requires_grad
            or fn.scale.requires_grad or (torch.is_tensor(w) and (w.requires_grad or w.dim() > 0))):
        return None  # (a mask over elements is left to autograd: its shape need not be the value's)
    value, w, scale = node["value"], float(w), fn.scale
    loc, half_log_2pi = fn.loc.to(value.dtype), 0.5 * math.log(2 * math.pi)
    if scale.numel() and not any(scale.stride()):  # one number (a scalar, or one broadcast): no tensor of it
        one = float(scale[(0,) * scale.dim()])
        return _FixedNormal(w / one**2, loc, w * value.numel() * (math.log(one) + half_log_2pi))
    scale = torch.broadcast_to(scale, value.shape).to(value.dtype)
    return _FixedNormal(w / scale**2, loc, w * (scale.log().sum() + value.numel() * half_log_2pi))


def _unit_products(g: torch.Tensor, v: torch.Tensor):
    """``(indices, rows)``: the derivatives of the gradient ``g`` (a graph in ``v``) along unit vectors, one batched
    backward pass per chunk of them (memory: a chunk times D); Hessian rows."""
    dim = v.shape[-1]
    size = max(1, min(dim, HVP_BUDGET // max(dim, 1)))
    for first in range(0, dim, size):
        idx = torch.arange(first, min(first + size, dim), device=v.device)
        basis = v.new_zeros(len(idx), dim)
        basis[torch.arange(len(idx)), idx] = 1.0
        (rows,) = torch.autograd.grad(g, v, grad_outputs=basis, is_grads_batched=True, retain_graph=True,
                                      allow_unused=True)
        yield idx, v.new_zeros(len(idx), dim) if rows is None else rows.detach()


def _gradient_graph(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """The gradient of the scalar ``y`` in ``v`` with its graph; None where ``y`` is at most linear in ``v``."""
    if not y.requires_grad:
        return None
    (g,) = torch.autograd.grad(y, v, create_graph=True, allow_unused=True)
    return None if g is None or not g.requires_grad else g


def _hessian(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The exact dense Hessian of the scalar ``y`` in ``v``."""
    out = v.new_zeros(v.shape[-1], v.shape[-1])
    g = _gradient_graph(y, v)
    for idx, rows in _unit_products(g, v) if g is not None else ():
        out[idx] = rows
    return out

def _known_links(trace, latent: set, what: str) -> dict:
    """``{site: (natural parameters with their Fisher, weight)}`` for the observed sites of a known family and the
    energy factors that declare theirs (``latent``: the conditioned sites, which are priors, not observations)."""
    discrete = [n for n, nd in trace.nodes.items() if nd["type"] == "sample" and not nd["is_observed"]
                and n not in latent and not isinstance(nd["fn"], _Subsample)]
    if discrete:
        raise ValueError(f"{what}: hessian='ggn' takes models whose latent sites are all continuous; {discrete} "
                         "would be drawn at random in the trace. Use hessian='full' (it sums them out).")
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
    if not out:
        observed = [n for n, nd in trace.nodes.items() if nd["type"] == "sample" and nd["is_observed"]
                    and n not in latent]
        raise ValueError(
            f"{what}: hessian='ggn' needs an observed site (pyro.sample(..., obs=...)) of a family whose link it "
            f"knows ({', '.join(KNOWN_LINKS)}), or an energy factor that declares its natural parameters "
            f"(energy_factor(..., gauss_newton=...), as pyebm.ttt.supervised energies do); this model's observed "
            f"sites are {observed or 'none'}. Use hessian='full'.")
    return out


class Roots:
    r"""The GGN's Fisher :math:`\Lambda` as square-root rows, :math:`\Lambda = \sum_r c_r c_r^\top`: one per
    observation element (:math:`\sqrt{f}`), one per nonzero eigenvalue of each example's block where the curvature
    comes in ``C x C`` blocks, and for a categorical (``"softmax"``) :math:`\sqrt{p_j}\,(e_j - p)` for each class
    :math:`j`, since :math:`\sum_j p_j (e_j - p)(e_j - p)^\top = \mathrm{diag}(p) - pp^\top`. The rows of
    :math:`L^\top J` are then Jacobian-vector products of the natural parameters with these cotangents, made in
    chunks by batched backward passes; roots with zero weight (masked observations, a softmax's null direction) are
    left out. The cotangents are made as they are needed (:class:`_RootBlock`), never held all at once.
    """

    def __init__(self, parts: dict):
        #: the natural parameters as the model made them, and flattened together
        self.naturals = [e for n in parts for e, _, _ in parts[n][0]]
        self.eta = torch.cat([e.reshape(-1) for e in self.naturals]) if len(self.naturals) > 1 else \
            self.naturals[0].reshape(-1)
        self.pieces, start = [], 0
        for pieces, weight in parts.values():
            for e, fisher, blocks in pieces:
                kind = _Softmax if blocks == "softmax" else _Eigen if blocks else _Elementwise
                self.pieces.append(kind(e, fisher.detach(), weight, start))
                start += e.numel()
        self.count = sum(p.count for p in self.pieces)
        self.examples = {p.examples for p in self.pieces if p.count}
        #: roots per example: the rows :meth:`by_example` makes (one: a scalar output per example)
        self.per_example = sum(p.per for p in self.pieces if p.count)

    def cotangents(self, dim: int):
        """Chunks ``(k, M)`` of the cotangents, one root a row, ``k`` sized so that ``k`` rows of ``D`` fit the HVP
        budget."""
        size = max(1, min(self.count, HVP_BUDGET // max(dim, self.eta.numel(), 1)))
        for piece in self.pieces:
            kept = piece.keep.reshape(-1).nonzero().squeeze(-1)
            for first in range(0, len(kept), size):
                cot = self.eta.new_zeros(len(kept[first : first + size]), self.eta.numel())
                piece.put_roots(cot, kept[first : first + size])
                yield cot

    def by_example(self, size: int):
        r"""Chunks ``(k, M)`` of the cotangents summed over examples: a row holds root ``j`` of every example of a piece
        at once. Where the examples are independent (example ``n``'s natural parameters depend only on row ``n`` of a
        layer's output), one backward pass of such a row gives every example's own pullback in that row (the per-root
        rows' in one pass instead of one per example; :meth:`signed` tests the independence). ``size`` rows a chunk."""
        for piece in (p for p in self.pieces if p.count):  # (rows: per_example in all)
            for first in range(0, piece.per, size):
                cot = self.eta.new_zeros(min(size, piece.per - first), self.eta.numel())
                piece.put_within(cot, first)
                yield cot

    def signed(self, sign: torch.Tensor) -> torch.Tensor:
        """``(M,)``: every root, each example's multiplied by its ``sign``, summed."""
        cot = self.eta.new_zeros(self.eta.numel())
        for piece in self.pieces:
            piece.put_signed(cot, sign)
        return cot

    def jacobian_rows(self, v: torch.Tensor):
        r"""Chunks ``(k, D)`` of the rows of :math:`L^\top J`, whose Gram matrix is :math:`J^\top\Lambda J`."""
        for cot in self.cotangents(v.shape[-1]):
            (rows,) = torch.autograd.grad(self.eta, v, grad_outputs=cot, is_grads_batched=True, retain_graph=True,
                                          allow_unused=True)
            yield v.new_zeros(len(cot), v.shape[-1]) if rows is None else rows.detach()


class _RootBlock:
    """The square-root rows of one natural parameter's Fisher, which takes the segment ``[start, start + numel)`` of
    the natural parameters as ``(E, K, c)``: ``E`` examples (the leading axis, as a plate's), ``K`` rows of ``c``
    coupled elements each, ``c`` roots per row (root ``j`` of a row is a vector over its ``c`` elements; ``c = 1`` for
    an elementwise Fisher). A subclass gives the roots' vectors (:meth:`vectors`), their sum over ``j``
    (:meth:`total`), which roots are nonzero (``keep``, ``(E K, c)``) and whether ``e`` has a class axis
    (``blocked``)."""

    blocked = True

    def __init__(self, e: torch.Tensor, c: int, start: int):
        self.start, self.c = start, c
        self.examples = e.shape[0] if e.dim() > int(self.blocked) else 1
        self.rows = e.numel() // c
        self.per = e.numel() // self.examples  # roots per example: K c
        self.count = int(self.keep.sum())

    def vectors(self, rows: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """``(k, c)``: root ``j[i]`` of row ``rows[i]``."""
        raise NotImplementedError

    def total(self) -> torch.Tensor:
        """``(E K, c)``: each row's roots summed."""
        raise NotImplementedError

    def _segment(self, cot: torch.Tensor) -> torch.Tensor:
        """``cot``'s columns of this piece as ``(k, E, K, c)`` (a view)."""
        seg = cot[..., self.start : self.start + self.rows * self.c]
        return seg.view(*cot.shape[:-1], self.examples, self.rows // self.examples, self.c)

    def put_roots(self, cot: torch.Tensor, flat: torch.Tensor) -> None:
        """Root ``flat[i]`` (an index into the ``(E K, c)`` roots) into row ``i`` of ``cot``."""
        rows, j = flat // self.c, flat % self.c
        seg = self._segment(cot).view(len(cot), self.rows, self.c)
        seg[torch.arange(len(cot), device=cot.device), rows] = self.vectors(rows, j).to(cot.dtype)

    def put_within(self, cot: torch.Tensor, first: int) -> None:
        """Root ``first + i`` of every example (its index within the example, ``K c`` of them) into row ``i``."""
        k, K = len(cot), self.rows // self.examples
        within = torch.arange(first, first + k, device=cot.device)
        r, j = within // self.c, within % self.c
        rows = (torch.arange(self.examples, device=cot.device)[:, None] * K + r).reshape(-1)  # (E k,)
        vec = self.vectors(rows, j.repeat(self.examples)).reshape(self.examples, k, self.c).transpose(0, 1)
        self._segment(cot)[torch.arange(k, device=cot.device), :, r] = vec.to(cot.dtype)

    def put_signed(self, cot: torch.Tensor, sign: torch.Tensor) -> None:
        """Every root, times its example's ``sign``, added to ``cot`` (``(M,)``)."""
        total = self.total().reshape(self.examples, -1, self.c)
        self._segment(cot).add_((total * sign[: self.examples, None, None].to(total.dtype)).to(cot.dtype))


class _Elementwise(_RootBlock):
    r"""A diagonal Fisher ``f``: one root :math:`\sqrt{f}` per element."""

    blocked = False

    def __init__(self, e, fisher, weight, start):
        self.root = torch.broadcast_to(fisher * weight, e.shape).reshape(-1, 1).clamp_min(0).sqrt()
        self.keep = self.root > 0
        super().__init__(e, 1, start)

    def vectors(self, rows, j):
        return self.root[rows]

    def total(self):
        return self.root


class _Eigen(_RootBlock):
    """A Fisher in ``C x C`` blocks ``(..., C, C)``: the eigenvectors times the square roots of their eigenvalues,
    those below ``1e-12`` of the block's largest dropped."""

    def __init__(self, e, fisher, weight, start):
        c = e.shape[-1]
        w = torch.as_tensor(weight, dtype=fisher.dtype, device=fisher.device)
        f = torch.broadcast_to(fisher * w[..., None, None], tuple(e.shape[:-1]) + (c, c)).reshape(-1, c, c)
        lam, Q = torch.linalg.eigh(f)
        self.keep = lam > 1e-12 * lam.abs().amax(-1, keepdim=True).clamp_min(1e-300)
        self.roots = (Q * (lam.clamp_min(0).sqrt() * self.keep)[:, None, :]).transpose(1, 2)  # (rows, root, element)
        super().__init__(e, c, start)

    def vectors(self, rows, j):
        return self.roots[rows, j]

    def total(self):
        return self.roots.sum(1)


class _Softmax(_RootBlock):
    r"""A categorical's Fisher :math:`\mathrm{diag}(p) - pp^\top` per row, from its weighted probabilities ``p``:
    root ``j`` is :math:`\sqrt{p_j}\,(e_j - q)` with :math:`q = p / \sum p` (the weight taken out), made when asked
    for from ``p`` alone."""

    def __init__(self, e, fisher, weight, start):
        c = e.shape[-1]
        w = torch.as_tensor(weight, dtype=fisher.dtype, device=fisher.device)
        p = torch.broadcast_to(fisher * w[..., None], e.shape).reshape(-1, c)
        self.q = p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
        self.root = p.clamp_min(0).sqrt()
        self.keep = self.root > 0
        super().__init__(e, c, start)

    def vectors(self, rows, j):
        out = -self.q[rows] * self.root[rows, j, None]
        out[torch.arange(len(rows), device=out.device), j] += self.root[rows, j]
        return out

    def total(self):  # sum_j sqrt(p_j) (e_j - q) = sqrt(p) - q sum_j sqrt(p_j)
        return self.root - self.q * self.root.sum(-1, keepdim=True)


def rest_diagonal(rest: torch.Tensor, v: torch.Tensor, exact: bool, what: str) -> torch.Tensor:
    """The diagonal of the rest's Hessian. Priors are usually elementwise, so two Hessian-vector products tell it
    (``H 1`` is the diagonal if ``H z = (H 1) z`` for a random ``z``); otherwise ``exact`` takes it from Hessian rows in
    chunks, and a structure that needs a diagonal rest refuses."""
    g = _gradient_graph(rest, v)
    if g is None:
        return v.new_zeros(v.shape[-1])
    z = torch.randn(v.shape[-1], generator=torch.Generator(device=v.device).manual_seed(0), dtype=v.dtype,
                    device=v.device)
    (hv,) = torch.autograd.grad(g, v, grad_outputs=torch.stack([torch.ones_like(z), z]), is_grads_batched=True,
                                retain_graph=True, allow_unused=True)
    if hv is None:
        return v.new_zeros(v.shape[-1])
    d, hz = hv[0].detach(), hv[1].detach()
    if torch.allclose(hz, d * z, rtol=1e-6, atol=1e-9 * float(d.abs().max().clamp_min(1.0))):
        return d
    if not exact:
        raise ValueError(f"{what}: this structure of the GGN needs the curvature of the priors (and other terms "
                         "outside the observations) to be elementwise, as independent priors on the weights are; it "
                         "couples coordinates here. Use structure='full' or 'diag'.")
    out = v.new_empty(v.shape[-1])
    for idx, rows in _unit_products(g, v):
        out[idx] = rows[torch.arange(len(idx)), idx]
    return out

def _low_rank(count: int, chunks, v: torch.Tensor, rest_diag: torch.Tensor, rank: int, ops, what: str, labels):
    r"""The top ``rank`` eigenpairs of :math:`J^\top\Lambda J = R^\top R` from the singular vectors of the rows
    :math:`R` (about ``count x D``, held, from its ``chunks``; exact thin SVD up to 2048 on the short side, else
    randomised with a fixed seed), plus the rest's diagonal, which must be positive (a proper prior on every
    coordinate)."""
    need = count * v.shape[-1] * v.element_size()
    if need > MAX_DENSE_BYTES:
        raise MemoryError(f"{what}: the low-rank GGN holds the {count} x {v.shape[-1]} rows of its square "
                          f"root, {need / 2**30:.1f} GiB (limit {MAX_DENSE_BYTES / 2**30:.0f} GiB); use "
                          "structure='kron' or 'diag', or fewer observations.")
    rows = torch.cat(list(chunks))
    diag = positive_diagonal(rest_diag, ops, what, labels, part="the prior's (rest's) curvature, which the low-rank "
                             "structure adds to the data's,")
    k = min(rank, *rows.shape)
    if min(rows.shape) <= 2048:
        _, S, Vh = torch.linalg.svd(rows, full_matrices=False)
        V, S = Vh[:k].T, S[:k]
    else:
        with torch.random.fork_rng(devices=[v.device] if v.device.type == "cuda" else []):
            torch.manual_seed(0)
            _, S, V = torch.svd_lowrank(rows, q=min(k + 10, *rows.shape), niter=4)
        V, S = V[:, :k], S[:k]
    return LowRank(diag.precision_form(), V, S**2, ops)
