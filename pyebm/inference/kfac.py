r"""Kronecker-factored GGN (K-FAC) for the ``nn.Linear`` layers of a Pyro model or a test-time adaptation.

A layer :math:`s = Wa + b` (weight ``(out, in)``) applied to inputs :math:`a_n` contributes to the GGN's weight block

.. math:: G_W = \sum_r \Bigl(\sum_n g_{rn} \otimes a_n\Bigr)\Bigl(\sum_n g_{rn} \otimes a_n\Bigr)^\top
          \approx \Bigl(\sum_{r,n} g_{rn} g_{rn}^\top\Bigr) \otimes \Bigl(\frac1N \sum_n a_n a_n^\top\Bigr) = B\otimes A,

with :math:`g_{rn} = \partial (c_r^\top\eta) / \partial s_n` the square-root rows of the Fisher (:class:`Roots`)
pulled back to the layer's outputs (Martens & Grosse 2015; "expand" K-FAC with the exact GGN's output factor,
as curvlinops and laplace-torch compute it). It is exact for one example, and for a last layer fed the same input.
The bias block :math:`\sum_r (\sum_n g_{rn})(\sum_n g_{rn})^\top` is the GGN's own; blocks of different layers (and
a weight and its bias) are independent, as in K-FAC. Coordinates outside any layer (a noise scale, a layer
norm's scale) form one dense GGN block. The prior's curvature must be elementwise and constant over each weight and
each bias (an isotropic Gaussian prior per parameter, as laplace-torch's prior precision); it is added exactly
through the eigendecomposition of the factors (:class:`~pyebm.inference.factored.Kronecker`).

Layers are found by a global forward hook during the model's one run: an ``nn.Linear`` whose ``weight`` is the value
of a latent site (a ``PyroSample`` weight, or a weight passed to :func:`torch.func.functional_call` as
:func:`pyebm.ttt.adapt` does).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

from .curvature import check_dense_size
from .factored import Kronecker

__all__ = ["LayerRecorder", "kronecker"]


class LayerRecorder:
    """A context that records every ``nn.Linear`` call: ``(input, output, weight, bias)``."""

    def __enter__(self) -> LayerRecorder:
        self.calls = []
        self._handle = register_module_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _hook(self, module, inputs, output) -> None:
        if isinstance(module, nn.Linear):
            self.calls.append((inputs[0], output, module.weight, module.bias))


def _coordinates(potential, v: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Each site's coordinates in ``v`` (None where some of its elements are held: it cannot be a K-FAC block)."""
    full_to_v = torch.full((sum(s.numel for s in potential.sites),), -1, dtype=torch.long)
    index = getattr(potential, "index", None)
    free = torch.arange(full_to_v.numel()) if index is None else torch.as_tensor(index)
    full_to_v[free] = torch.arange(len(free))
    out, start = {}, 0
    for s in potential.sites:
        idx = full_to_v[start : start + s.numel]
        start += s.numel
        out[s.name] = idx.to(v.device) if bool((idx >= 0).all()) else None
    return out


def kronecker(recorder: LayerRecorder, trace, potential, v: torch.Tensor, roots, rest: torch.Tensor,
              what: str) -> Kronecker:
    """The K-FAC structure of the GGN from the recorded layer calls (see the module docstring)."""
    from .gauss_newton import rest_diagonal

    coords = _coordinates(potential, v)
    by_value = {id(trace.nodes[s.name]["value"]): s.name for s in potential.sites
                if s.on_reals and coords[s.name] is not None}
    layers = {}  # weight site -> [bias site or None, calls]
    for a, s, weight, bias in recorder.calls:
        name = by_value.get(id(weight))
        if name is not None:
            layers.setdefault(name, [by_value.get(id(bias)) if bias is not None else None, []])[1].append((a, s))
    if not layers:
        raise ValueError(f"{what}: hessian='kron' factorises nn.Linear layers whose weight is a latent site (a "
                         "PyroSample weight, or a weight adapted by pyebm.ttt.adapt); this model calls none. Use "
                         "hessian='ggn' (dense) or structure='diag'.")
    in_layers = {n for w, (b, _) in layers.items() for n in (w, b) if n is not None}
    left = [coords[s.name] for s in potential.sites if s.name not in in_layers and coords[s.name] is not None]
    left = torch.cat(left) if left else None
    outputs = [s for _, (_, calls) in layers.items() for _, s in calls]
    dim = v.shape[-1]
    if left is not None:
        check_dense_size(len(left), 1, v.element_size(), what)
    B = {w: 0.0 for w in layers}
    Bb = {w: 0.0 for w in layers}
    on_graph = [False] * len(outputs)
    G_left = 0.0
    for cot in roots.cotangents(dim):
        grads = torch.autograd.grad(roots.eta, outputs + ([v] if left is not None else []), grad_outputs=cot,
                                    is_grads_batched=True, retain_graph=True, allow_unused=True)
        i = 0
        for w, (_, calls) in layers.items():
            for _ in calls:
                g = grads[i]
                if g is not None:
                    on_graph[i] = True
                    g = g.detach().reshape(len(cot), -1, g.shape[-1])  # (k, N, out)
                    B[w] = B[w] + torch.einsum("kno,knp->op", g, g)
                    gs = g.sum(1)
                    Bb[w] = Bb[w] + gs.T @ gs
                i += 1
        if left is not None and grads[-1] is not None:
            rows = grads[-1].detach()[:, left]
            G_left = G_left + rows.T @ rows
    prior = rest_diagonal(rest, v, exact=False, what=what)
    blocks, i = [], 0
    for w, (b, calls) in layers.items():
        used = [(a, s) for j, (a, s) in enumerate(calls) if on_graph[i + j]]
        i += len(calls)
        if len(used) > 1:
            raise ValueError(f"{what}: hessian='kron' takes one call of each nn.Linear on the observations' graph; "
                             f"the weight {w!r} is used {len(used)} times (shared weights). Use hessian='ggn'.")
        out_f, in_f = trace.nodes[w]["value"].shape
        if used:
            a = used[0][0].detach().reshape(-1, in_f)
            A = a.T @ a / a.shape[0]
        else:  # not on the observations' graph: the prior alone
            A = v.new_zeros(in_f, in_f)
        Bw = B[w] if torch.is_tensor(B[w]) else v.new_zeros(out_f, out_f)
        blocks.append((w, coords[w], Bw, A, _isotropic(prior, coords[w], w, what)))
        if b is not None:
            Bbias = Bb[w] if torch.is_tensor(Bb[w]) else v.new_zeros(out_f, out_f)
            blocks.append((b, coords[b], Bbias, None, _isotropic(prior, coords[b], b, what)))
    if left is not None:
        G = G_left if torch.is_tensor(G_left) else v.new_zeros(len(left), len(left))
        blocks.append(("other sites", left, G, None, prior[left]))
    return Kronecker(blocks, dim, potential.ops, what)


def _isotropic(prior: torch.Tensor, idx: torch.Tensor, name: str, what: str) -> float:
    """The prior's curvature over one parameter, which must be one number (an isotropic prior)."""
    d = prior[idx]
    lo, hi = float(d.min()), float(d.max())
    if hi - lo > 1e-8 * max(abs(hi), abs(lo), 1e-300):
        raise ValueError(f"{what}: hessian='kron' adds the prior's curvature to each weight's Kronecker factors "
                         f"exactly only where it is one number per parameter; {name!r} has {lo:.4g} to {hi:.4g}. Give "
                         "it an isotropic prior (one scale), or use structure='diag'.")
    return lo
