r"""Kronecker-factored GGN (K-FAC) for the ``nn.Linear`` and ``nn.Conv2d`` layers of a Pyro model or a test-time
adaptation.

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

A convolution is the same product over its unfolded patches (Grosse & Martens 2016): each of an example's ``T``
output positions is a row, :math:`A` the mean outer product of the patches, :math:`B` the sum over every position's
pullback, the bias block over each example's positions summed. A layer with several rows per example (a convolution,
or a linear layer over a sequence) is no longer exact for one example.

The examples' pullbacks come from one backward pass per root of an example, all examples at once, where the
examples are independent (tested, else one pass per root). Layers are found by a global forward hook during the
model's one run: an ``nn.Linear`` or ``nn.Conv2d`` (``groups=1``, numeric zero padding) whose ``weight`` is the value
of a latent site (a ``PyroSample`` weight, or a weight passed to :func:`torch.func.functional_call` as
:func:`pyebm.ttt.adapt` does).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge
from torch.nn.modules.module import register_module_forward_hook

from ..ops import HVP_BUDGET
from .curvature import check_dense_size
from .factored import Kronecker

__all__ = ["LayerRecorder", "kronecker", "layer_diagonal", "layer_rows"]

#: numbers of layer pullbacks held at once (1 MiB in float64): a network's curvature then costs little more memory
#: than its forward pass, at some speed (one root of every example per backward pass where the layers are wide)
PULLBACK_BUDGET = 2**17
#: numbers held by a convolution's unfolded patches or batched outer products at once, while its factors are formed
FACTOR_BUDGET = 2**17


class LayerCall:
    """One call of an ``nn.Linear`` or ``nn.Conv2d``: its input as rows of the layer's matrix product (a convolution's
    unfolded patches), and its output's pullbacks as rows ``(k, N, T, out)`` (``T`` spatial positions). The output is
    held as its place in the graph (``edge``, for ``torch.autograd.grad``) and its ``shape``, not its values, which the
    graph itself need not keep (a convolution followed by tanh keeps only tanh's output)."""

    def __init__(self, module: nn.Module, a: torch.Tensor, s: torch.Tensor):
        self.module, self.a, self.shape = module, a, tuple(s.shape)
        self.edge = get_gradient_edge(s) if s.requires_grad else None
        self.weight, self.bias = module.weight, module.bias
        self.conv = isinstance(module, nn.Conv2d)

    def unsupported(self) -> str | None:
        """Why K-FAC cannot factor this convolution (None if it can)."""
        m = self.module
        if self.conv and (m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return (f"groups={m.groups}, padding={m.padding!r}, padding_mode={m.padding_mode!r} (K-FAC takes "
                    "groups=1 and numeric zero padding)")
        if isinstance(m, nn.modules.conv._ConvNd) and not self.conv:
            return f"{type(m).__name__} (K-FAC takes nn.Linear and nn.Conv2d)"
        if self.conv and len(self.shape) != 4:
            return f"an unbatched input of shape {tuple(self.a.shape)} (K-FAC takes a batch, (N, C, H, W))"
        return None

    def inputs(self) -> torch.Tensor:
        """A linear layer's inputs as rows ``(N T, in)``."""
        return self.a.detach().reshape(-1, self.a.shape[-1])

    def input_factor(self) -> torch.Tensor:
        r"""``A``, the mean outer product of the inputs, :math:`\frac1{NT}\sum_{n,t} a_{nt} a_{nt}^\top`, the weight
        flattened to ``(out, in)`` row-major. A convolution's patches are unfolded a chunk of examples at a time."""
        if not self.conv:
            a = self.inputs()
            return a.T @ a / a.shape[0]
        m, x = self.module, self.a.detach()
        A, rows = 0.0, 0
        step = max(1, FACTOR_BUDGET // max(x[:1].numel() * math.prod(m.kernel_size), 1))
        for first in range(0, len(x), step):
            u = torch.nn.functional.unfold(x[first : first + step], m.kernel_size, m.dilation, m.padding, m.stride)
            u = u.transpose(1, 2).reshape(-1, u.shape[1])  # (m T, in)
            A, rows = A + u.T @ u, rows + len(u)
        return A / rows

    def output_factors(self, g: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        r"""From pullbacks ``g`` ``(k, *output shape)`` of ``n`` examples, the sums of the outer products of every
        output row (:math:`\sum_{k,n,t} g_{knt} g_{knt}^\top`, the weight's output factor) and of each example's rows
        summed (the bias's), each ``(out, out)``. A convolution's rows are channels over positions, taken a chunk of
        examples at a time by batched products, not transposed copies."""
        k, out = len(g), self.shape[1 if self.conv else -1]
        if not self.conv:
            rows = g.reshape(-1, out)
            if len(rows) == k * n:  # one row per example: the bias's factor is the weight's
                B = rows.T @ rows
                return B, B
            sums = g.reshape(k * n, -1, out).sum(1)
            return rows.T @ rows, sums.T @ sums
        maps = g.reshape(-1, out, math.prod(self.shape[2:]))  # (k N, out, T)
        step = max(1, FACTOR_BUDGET // (out * out))
        B = sum(torch.bmm(c, c.transpose(1, 2)).sum(0) for c in maps.split(step))
        sums = maps.sum(2).reshape(k * n, -1, out).sum(1)
        return B, sums.T @ sums

    def weight_gradient(self, g: torch.Tensor) -> torch.Tensor:
        """The gradient in the weight, ``(out, in)``, of a pullback ``g`` to the output (its shape), by the layer's
        own backward operation (a convolution's input is not unfolded)."""
        a, m = self.a.detach(), self.module
        if self.conv:
            w = torch.nn.grad.conv2d_weight(a, m.weight.shape, g, m.stride, m.padding, m.dilation, m.groups)
            return w.reshape(w.shape[0], -1)
        return g.reshape(-1, g.shape[-1]).T @ a.reshape(-1, a.shape[-1])

    def bias_gradient(self, g: torch.Tensor) -> torch.Tensor:
        """The gradient in the bias, ``(out,)``, of a pullback ``g`` to the output (its shape)."""
        return g.sum([d for d in range(g.dim()) if d != (1 if self.conv else g.dim() - 1)])


class LayerRecorder:
    """A context that records every call of an ``nn.Linear`` or a convolution as a :class:`LayerCall`."""

    def __enter__(self) -> LayerRecorder:
        self.calls = []
        self._handle = register_module_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _hook(self, module, inputs, output) -> None:
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            self.calls.append(LayerCall(module, inputs[0], output))


def _coordinates(potential, v: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Each site's coordinates in ``v`` (None where some of its elements are held: it cannot be a K-FAC block)."""
    index = getattr(potential, "index", None)
    if index is None:  # every coordinate free: the sites' segments in order
        return {name: torch.arange(segment.start, segment.stop, device=v.device)
                for name, segment in _segments(potential.sites).items()}
    out, start = {}, 0
    full_to_v = torch.full((sum(s.numel for s in potential.sites),), -1, dtype=torch.long)
    full_to_v[torch.as_tensor(index)] = torch.arange(len(index))
    for s in potential.sites:
        idx = full_to_v[start : start + s.numel]
        start += s.numel
        out[s.name] = idx.to(v.device) if bool((idx >= 0).all()) else None
    return out


def _segments(sites: list) -> dict[str, slice]:
    """Each site's coordinates where every coordinate is free: a segment, in the sites' order."""
    out, start = {}, 0
    for s in sites:
        out[s.name] = slice(start, start + s.numel)
        start += s.numel
    return out


def _layers(recorder: LayerRecorder, trace, potential, v: torch.Tensor, what: str | None):
    """The latent coordinates, the recorded layers ``{weight site: [bias site or None, [LayerCall, ...]]}`` and the
    coordinates outside them (None if none). A layer K-FAC cannot factor raises (``what`` names the caller) or, with
    ``what=None``, is left out (its coordinates then count as outside the layers)."""
    coords = _coordinates(potential, v)
    by_value = {id(trace.nodes[s.name]["value"]): s.name for s in potential.sites
                if s.on_reals and coords[s.name] is not None}
    layers = {}
    for call in recorder.calls:
        name = by_value.get(id(call.weight))
        if name is not None:
            problem = call.unsupported()
            if problem and what is None:
                continue
            if problem:
                raise ValueError(f"{what}: hessian='kron' cannot factor the layer whose weight is {name!r}: "
                                 f"{problem}. Use hessian='ggn' (dense, or structure='diag').")
            bias = by_value.get(id(call.bias)) if call.bias is not None else None
            layers.setdefault(name, [bias, []])[1].append(call)
    in_layers = {n for w, (b, _) in layers.items() for n in (w, b) if n is not None}
    left = [coords[s.name] for s in potential.sites if s.name not in in_layers and coords[s.name] is not None]
    return coords, layers, torch.cat(left) if left else None


def _probe(roots, layers: dict, coords: dict, v: torch.Tensor, keep: bool = False,
           likelihood: torch.Tensor | None = None):
    r"""A backward pass of every root summed (and, where it can be tested, a second of every root flipped by a random
    sign per example, compared with the first by a random projection of each example's rows) answers three questions
    about the recorded layer calls ``[c for each layer, for each call]`` (with ``keep``, the first pass's pullbacks
    ``(1, *output shape)`` are returned too, else None: where each example has one root they are the pullbacks
    themselves, up to a sign per example, which their outer products do not see):

    * ``N``, the number of examples, if every layer output's leading axis is the observations' example axis and the
      examples are independent: each row of every layer's pullback must flip with its example's sign (a batch norm in
      training mode, or attention across the batch, mixes them and fails); else 0;
    * which calls are on the observations' graph;
    * whether the layers' weights and biases reach the observations only through those calls: the gradient in ``v``
      must equal what the pullbacks give (:math:`\sum g \otimes a` over a weight, :math:`\sum g` over a bias). A
      weight also used outside its layer (added to an output, shared with a custom operation) fails, and pullbacks
      alone would miss that path.

    Returned as ``(N, on graph, through, pullbacks, gradient)``. With ``likelihood`` (the observations' part of the
    potential, whose gradient in ``v`` the caller needs anyway) and one natural parameter per example, that gradient's
    backward pass answers the first and third questions, and the first pass stops at the layers' outputs: it takes
    every root times its example's random sign :math:`s_n c_n`, the likelihood's pass pulls back :math:`r_n =
    \partial E/\partial\eta_n`, and independent examples give :math:`s_n c_n\,\bar g^E_n = r_n \bar g_n` in every row
    (exactly the first pass's rows scaled, where a mixing operation couples every example's row to the others'
    cotangents); its gradient in ``v`` must be what its own pullbacks give. The gradient is returned (else None).
    """
    calls = [(w, b, c) for w, (b, made) in layers.items() for c in made]
    outputs = [c.edge for *_, c in calls]
    (n,) = roots.examples if len(roots.examples) == 1 else (0,)
    testable = n >= 2 and all(len(c.shape) >= 2 and c.shape[0] == n for *_, c in calls)
    scalar = (keep and likelihood is not None and likelihood.requires_grad and testable
              and roots.eta.numel() == n)  # one natural parameter per example
    if testable:
        gen = torch.Generator(device=v.device).manual_seed(0)
        sign = torch.randint(0, 2, (n,), generator=gen, device=v.device).to(v.dtype) * 2 - 1
    ones = roots.eta.new_ones(max(roots.examples, default=1))
    cot = roots.signed(sign if scalar else ones)
    grads = torch.autograd.grad(roots.eta, outputs + ([] if scalar else [v]), grad_outputs=cot, retain_graph=True,
                                allow_unused=True)
    pulled = [None if g is None else g.detach() for g in grads[: len(outputs)]]
    on_graph = [g is not None for g in pulled]
    first = [None if g is None else g[None] for g in pulled] if keep else None
    through = None if scalar else _through(None if grads[-1] is None else grads[-1].detach(), pulled, calls, layers,
                                           coords, v)
    del grads
    independent = gradient = None  # (None: not yet tested)
    if scalar:
        independent, gradient, by_likelihood = _likelihood_pass(likelihood, roots, outputs, pulled, cot, v)
        through = _through(gradient, by_likelihood, calls, layers, coords, v)
        if not through:  # the likelihood may reach the weights beside its natural parameters: the roots' pass decides
            (direct,) = torch.autograd.grad(roots.eta, v, grad_outputs=cot, retain_graph=True, allow_unused=True)
            through = _through(None if direct is None else direct.detach(), pulled, calls, layers, coords, v)
    if testable and independent is None:  # a second pass with a random sign per example; each example's rows
        # compared (kept ones in full, else by a random projection, not to hold them during the pass)
        kept = [(i, _project(g, None if keep else gen)) for i, g in enumerate(pulled) if g is not None]
        del pulled
        flipped = torch.autograd.grad(roots.eta, [outputs[i] for i, _ in kept],
                                      grad_outputs=roots.signed(ones if scalar else sign), retain_graph=True,
                                      allow_unused=True)
        eps = 64 * torch.finfo(v.dtype).eps
        agree = [(_project(g.detach(), r)[1] if g is not None else torch.zeros_like(before)).sub_(
            sign.reshape((n,) + (1,) * (before.dim() - 1)) * before).abs().max() <= eps * bound
            for (_, (r, before, bound)), g in zip(kept, flipped)]
        independent = bool(torch.stack(agree).all()) if agree else True
    return (n if independent else 0), on_graph, through, first, gradient


def _through(direct: torch.Tensor | None, pulled: list, calls: list, layers: dict, coords: dict,
             v: torch.Tensor) -> bool:
    """Whether a gradient in ``v`` (``direct``; None: ``v`` not reached) is what its pullbacks to the layer outputs
    (``pulled``, one per call, None off the graph) give over the layers' weights and biases: they reach it only
    through those calls."""
    if direct is None:
        return True
    assembled = torch.zeros_like(v)
    for (w, b, c), g in zip(calls, pulled):
        if g is not None:
            assembled.index_add_(0, coords[w], c.weight_gradient(g).reshape(-1))
            if b is not None:
                assembled.index_add_(0, coords[b], c.bias_gradient(g))
    idx = torch.cat([coords[m] for w, (b, _) in layers.items() for m in (w, b) if m is not None])
    if len(idx) < len(v):  # coordinates outside the layers: not compared
        direct, assembled = direct[idx], assembled[idx]
    tol = 1e3 * torch.finfo(v.dtype).eps * direct.abs().max().clamp_min(torch.finfo(v.dtype).tiny)
    return bool(((direct - assembled).abs() <= tol).all())


def _likelihood_pass(likelihood: torch.Tensor, roots, outputs: list, first: list, cot: torch.Tensor,
                     v: torch.Tensor):
    r"""``(independent, gradient, pullbacks)``: the likelihood's gradient in ``v`` by one backward pass, which also
    pulls it back to the layer ``outputs`` (returned, None off its graph) and, by its derivative in the natural
    parameters (one per example), tells whether the examples are independent: each example's row must be the first
    pass's (``first``, of the cotangent ``cot``) scaled, :math:`c_n\,\bar g^E_n = r_n \bar g_n` (see :func:`_probe`;
    to round-off of the larger side). ``independent`` is None where the likelihood does not reach the natural
    parameters it declared (they are then recomputed apart from it), and the caller's flipped pass decides."""
    got = torch.autograd.grad(likelihood, [v, *outputs, *roots.naturals], retain_graph=True, allow_unused=True)
    gradient = torch.zeros_like(v) if got[0] is None else got[0].detach()
    pulled = [None if g is None else g.detach() for g in got[1 : 1 + len(outputs)]]
    rs = got[1 + len(outputs):]
    if any(r is None for r in rs):
        return None, gradient, pulled
    r = torch.cat([x.detach().reshape(-1) for x in rs])
    n, tol = len(r), 1e3 * torch.finfo(v.dtype).eps
    sizes = []  # (worst difference, larger side) per layer
    for g, before in zip(pulled, first):
        if before is None:
            continue
        theirs = r[:, None] * before.reshape(n, -1)
        mine = torch.zeros_like(theirs) if g is None else cot[:, None] * g.reshape(n, -1)
        sizes.append(torch.stack([torch.linalg.vector_norm(x, math.inf) for x in (mine - theirs, mine, theirs)]))
    if not sizes:
        return True, gradient, pulled
    sizes = torch.stack(sizes)
    return bool((sizes[:, 0] <= tol * sizes[:, 1:].amax(1)).all()), gradient, pulled


def _project(g: torch.Tensor, direction) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Each example's pullback rows ``g`` (``(N, ...)``) projected on one direction (``direction``: a vector, or a
    generator to draw a random one from; None keeps the rows whole): the direction, the ``(N,)`` projections (or the
    rows) and a bound on their size (what a flipped pass is compared by, without holding ``g``)."""
    flat = g.reshape(g.shape[0], -1)
    if direction is None:
        return None, flat, flat.abs().max()
    r = direction if torch.is_tensor(direction) else torch.randn(flat.shape[1], generator=direction, device=g.device,
                                                                  dtype=g.dtype)
    return r, flat @ r, flat.abs().max() * r.abs().sum()


def _pullbacks(roots, calls: list[LayerCall], v: torch.Tensor, left, n: int):
    r"""Chunks of the Fisher's square-root rows pulled back to each layer output, ``(k, *output shape)``, with the
    rows of :math:`L^\top J` in the coordinates ``left``. ``n`` independent examples (:func:`_probe`) take one
    backward pass per root of an example (all ``n`` at once, :meth:`Roots.by_example`); ``n = 0`` (needed where
    coordinates outside the layers take whole Jacobian rows) one per root, the batch then one example. A chunk is let
    go before the next is made: a consumer should not hold it either."""
    outputs = [c.edge for c in calls]
    size = max(1, PULLBACK_BUDGET // max(sum(math.prod(c.shape) for c in calls), 1))
    cotangents = roots.by_example(size) if n else roots.cotangents(v.shape[-1])
    for cot in cotangents:
        one = len(cot) == 1  # a plain backward pass: no batching rules' temporaries
        grads = torch.autograd.grad(roots.eta, outputs + ([v] if left is not None else []),
                                    grad_outputs=cot[0] if one else cot, is_grads_batched=not one, retain_graph=True,
                                    allow_unused=True)
        grads = [None if g is None else g.detach()[None] if one else g.detach() for g in grads]
        rows = grads[-1][:, left] if left is not None and grads[-1] is not None else None
        yield grads[: len(calls)], rows
        del grads, rows


def kronecker(recorder: LayerRecorder, trace, potential, v: torch.Tensor, roots, prior: torch.Tensor,
              what: str, likelihood: torch.Tensor | None = None) -> tuple[Kronecker, torch.Tensor | None]:
    """The K-FAC structure of the GGN from the recorded layer calls (see the module docstring), with ``prior`` the
    diagonal curvature of the rest (the priors), and the gradient of ``likelihood`` (the observations' part of the
    potential, if given) in ``v`` where its backward pass served the probe (:func:`_probe`), else None."""
    coords, layers, left = _layers(recorder, trace, potential, v, what)
    if not layers:
        raise ValueError(f"{what}: hessian='kron' factorises nn.Linear and nn.Conv2d layers whose weight is a latent "
                         "site (a PyroSample weight, or a weight adapted by pyebm.ttt.adapt); this model calls none. "
                         "Use hessian='ggn' (dense) or structure='diag'.")
    all_calls = [c for _, (_, made) in layers.items() for c in made]
    # where each example has one root (a scalar output), the probe's first pass is the one chunk of pullbacks
    single = left is None and roots.per_example == 1
    n, on_graph, through, first, gradient = _probe(roots, layers, coords, v, keep=single,
                                                   likelihood=likelihood if single else None)
    if not through:
        raise ValueError(f"{what}: hessian='kron' factorises each layer's weight and bias where they reach the "
                         "observations only through that layer; here some are also used outside it (in another "
                         "operation or module). Use hessian='ggn' (dense, or structure='diag').")
    if left is not None:
        check_dense_size(len(left), 1, v.element_size(), what)
    B = {w: 0.0 for w in layers}
    Bb = {w: 0.0 for w in layers}
    G_left = 0.0
    owners = [w for w, (_, made) in layers.items() for _ in made]
    n = n if left is None else 0
    for grads, rows in [(first, None)] if n and single else _pullbacks(roots, all_calls, v, left, n):
        for w, c, g in zip(owners, all_calls, grads):
            if g is not None:
                Bw, Bbias = c.output_factors(g, max(n, 1))
                B[w], Bb[w] = B[w] + Bw, Bb[w] + Bbias
        if rows is not None:
            G_left = G_left + rows.T @ rows
        del grads, rows, g  # the chunk let go before the next is made
    blocks, i = [], 0
    for w, (b, calls) in layers.items():
        used = [c for j, c in enumerate(calls) if on_graph[i + j]]
        i += len(calls)
        if len(used) > 1:
            raise ValueError(f"{what}: hessian='kron' takes one call of each layer on the observations' graph; "
                             f"the weight {w!r} is used {len(used)} times (shared weights). Use hessian='ggn'.")
        shape = trace.nodes[w]["value"].shape
        out_f, in_f = shape[0], shape.numel() // shape[0]
        if used:
            A = used[0].input_factor()
        else:  # not on the observations' graph: the prior alone
            A = v.new_zeros(in_f, in_f)
        Bw = B[w] if torch.is_tensor(B[w]) else v.new_zeros(out_f, out_f)
        blocks.append((w, coords[w], Bw, A))
        if b is not None:
            Bbias = Bb[w] if torch.is_tensor(Bb[w]) else v.new_zeros(out_f, out_f)
            blocks.append((b, coords[b], Bbias, None))
    blocks = [(*block, delta) for block, delta in zip(blocks, _isotropic(prior, blocks, what))]
    if left is not None:
        G = G_left if torch.is_tensor(G_left) else v.new_zeros(len(left), len(left))
        blocks.append(("other sites", left, G, None, prior[left]))
    return Kronecker(blocks, v.shape[-1], potential.ops, what), gradient


def _example_layers(recorder: LayerRecorder, trace, potential, v: torch.Tensor, roots):
    """``(coords, [(weight, bias, LayerCall)], N)`` where every latent coordinate is a weight or bias of an
    ``nn.Linear`` called once on the observations' graph, on one row per example, reaching the observations only
    through it, and the ``N`` examples are independent; None otherwise."""
    coords, layers, left = _layers(recorder, trace, potential, v, None)
    calls = [(w, b, c) for w, (b, made) in layers.items() for c in made]
    if not layers or left is not None or any(c.conv or len(c.shape) != 2 for *_, c in calls):
        return None
    n, on_graph, through, *_ = _probe(roots, layers, coords, v)
    calls = [c for c, used in zip(calls, on_graph) if used]
    if n == 0 or not through or len({w for w, *_ in calls}) < len(calls):  # mixed examples, another path, sharing
        return None
    return coords, calls, n


def layer_diagonal(recorder: LayerRecorder, trace, potential, v: torch.Tensor, roots) -> torch.Tensor | None:
    r"""The diagonal of :math:`J^\top\Lambda J` from the layers' per-example pullbacks (:func:`_example_layers`):
    :math:`\mathrm{diag}\,G_W = \sum_{k,n} g_{kn}^{2} (a_n^{2})^\top`, one backward pass per root of an example.
    None where they do not apply (the caller squares whole Jacobian rows)."""
    found = _example_layers(recorder, trace, potential, v, roots)
    if found is None:
        return None
    coords, calls, n = found
    diag = v.new_zeros(v.shape[-1])
    for grads, _ in _pullbacks(roots, [c for *_, c in calls], v, None, n):
        for (w, b, c), g in zip(calls, grads):
            if g is None:  # this chunk's roots do not reach the layer
                continue
            diag[coords[w]] += torch.einsum("kno,ni->oi", g**2, c.inputs() ** 2).reshape(-1)
            if b is not None:
                diag[coords[b]] += (g**2).sum((0, 1))
    return diag


def layer_rows(recorder: LayerRecorder, trace, potential, v: torch.Tensor, roots):
    r"""Chunks ``(R, D)`` of the rows of :math:`L^\top J` built from the layers' per-example pullbacks
    (:func:`_example_layers`): example ``n``'s row for a root is :math:`g \otimes a_n` over a weight and :math:`g`
    over its bias, one backward pass per root of an example instead of one per root. None where they do not apply.
    A chunk holds at most the HVP budget of numbers."""
    found = _example_layers(recorder, trace, potential, v, roots)
    if found is None:
        return None
    coords, calls, n = found
    dim = v.shape[-1]

    def rows():
        for grads, _ in _pullbacks(roots, [c for *_, c in calls], v, None, n):
            k = next(len(g) for g in grads if g is not None) if any(g is not None for g in grads) else 0
            step = max(1, HVP_BUDGET // max(k * dim, 1))
            for first in range(0, n if k else 0, step):
                part = slice(first, min(first + step, n))
                chunk = v.new_zeros(k, part.stop - part.start, dim)
                for (w, b, c), g in zip(calls, grads):
                    if g is not None:
                        g_part = g[:, part]  # (k, m, out)
                        chunk[:, :, coords[w]] = (g_part[..., None] * c.inputs()[part][None, :, None, :]).flatten(2)
                        if b is not None:
                            chunk[:, :, coords[b]] = g_part
                yield chunk.reshape(-1, dim)

    return rows()


def _isotropic(prior: torch.Tensor, blocks: list, what: str) -> list[float]:
    """The prior's curvature over each block's parameter (``blocks``: ``[name, index, ...]``), which must be one number
    per parameter (an isotropic prior); read in one transfer."""
    ranges = torch.stack([torch.stack(torch.aminmax(prior[index])) for _, index, *_ in blocks]).tolist()
    for (name, *_), (lo, hi) in zip(blocks, ranges):
        if hi - lo > 1e-8 * max(abs(hi), abs(lo), 1e-300):
            raise ValueError(f"{what}: hessian='kron' adds the prior's curvature to each weight's Kronecker factors "
                             f"exactly only where it is one number per parameter; {name!r} has {lo:.4g} to {hi:.4g}. "
                             "Give it an isotropic prior (one scale), or use structure='diag'.")
    return [lo for lo, _ in ranges]
