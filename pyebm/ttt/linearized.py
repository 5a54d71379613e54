r"""The linearised (GLM) predictive of a network's adapted weights: the network replaced by its first-order Taylor
expansion at the posterior's centre :math:`\hat\theta`,

.. math:: f(x;\theta) \approx f(x;\hat\theta) + J(x)(\theta - \hat\theta), \qquad J(x) = \partial f(x;\theta)/\partial\theta
          \big|_{\hat\theta},

so that a Gaussian posterior :math:`\mathcal N(\hat\theta, \Sigma)` gives Gaussian outputs
:math:`\mathcal N\bigl(f(x;\hat\theta),\, J\Sigma J^\top\bigr)` (Immer, Korzepa & Bauer 2021; MacKay 1992). Classes are
then read off by the probit approximation :math:`\mathrm{softmax}\bigl(\mu / \sqrt{1 + \tfrac\pi8\,\mathrm{diag}\,
\Sigma_f}\bigr)`, the Laplace bridge (a Dirichlet matched to the Gaussian, Hobbhahn et al. 2022), or Monte Carlo over
the Gaussian outputs. :math:`\Sigma J^\top` comes from the posterior's own covariance structure (dense or diagonal),
never a dense inverse.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.graph import get_gradient_edge
from torch.func import jacrev, vmap

from ..inference.curvature import DenseCovariance, DensePrecision

__all__ = ["glm_outputs", "LINKS"]


def glm_outputs(fn, posterior, x: torch.Tensor, independent: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(B, C)`` and covariance ``(B, C, C)`` of the linearised network outputs under a Gaussian posterior
    (a point mass gives zero covariance)."""
    centre = {k: v.to(fn.trained[k].dtype) for k, v in posterior.mode.items()}
    names = list(centre)

    def one(values_b, x_b):  # the outputs ride along as jacrev's aux: one forward pass
        def outputs(v):
            out = fn(v, x_b.unsqueeze(0)).squeeze(0)
            return out, out.detach()

        jac, out = jacrev(outputs, has_aux=True)(values_b)
        return out, jac

    last = None  # (the last layer's weight, bias and inputs, where the adapted weights are only those)
    with torch.no_grad():
        if independent:
            mean, jac = vmap(one)(centre, x)  # (B, C), {name: (B, C, *shape)}
        elif not _couples_examples(fn.net):  # one small Jacobian per example: C backward passes each
            found = _layer_jacobians(fn, centre, x)
            mean, jac, last = found if found is not None else (*vmap(one, in_dims=(None, 0))(centre, x), None)
        else:  # batch statistics tie the examples together: the Jacobian of the whole batch's outputs
            mean = fn(centre, x)
            jac = jacrev(lambda v: fn(v, x))(centre)
    B, C = mean.shape
    approx = posterior.approximation
    if approx.kind != "gaussian":
        return mean, mean.new_zeros(B, C, C)
    order = [s.name for s in approx.layout.sites]
    if sorted(order) != sorted(names) or getattr(approx.layout, "index", None) is not None:
        raise ValueError("the linearised predictive needs a Gaussian over exactly the adapted weights.")
    if (not independent and last is not None and C > 1
            and isinstance(approx.structure, (DensePrecision, DenseCovariance))):  # (1/C of the products)
        return mean, _last_layer_covariance(approx, last).to(mean.dtype)
    J = torch.cat([jac[k].reshape(B, C, -1) for k in order], -1).to(approx.loc.dtype)  # (B, C, D)
    if independent:  # one structure per input: batch over inputs, classes leading
        sigma_jt = approx.structure.solve(J.transpose(0, 1)).transpose(0, 1)
    else:
        sigma_jt = approx.structure.solve(J)
    return mean, (J @ sigma_jt.mT).to(mean.dtype)  # (B, C, C)


def _last_layer_covariance(approx, last: tuple) -> torch.Tensor:
    r"""``(B, C, C)``: :math:`J\Sigma J^\top` where the adapted weights are the last layer's (weight ``(C, in)``, bias
    optional), whose Jacobian is :math:`I_C \otimes \tilde a_n^\top` with :math:`\tilde a_n` the layer's input (and 1
    for the bias): :math:`\tilde a_n^\top \Sigma_{ck} \tilde a_n` for each pair of outputs, :math:`\Sigma_{ck}` the
    covariance between output ``c``'s and output ``k``'s weights (``C^2 B d^2`` products, not ``C B D^2``)."""
    from ..inference.kfac import _segments

    weight, bias, a = last
    segments, cov, inputs = _segments(approx.layout.sites), approx.structure.covariance(), a.shape[-1]
    C = (segments[weight].stop - segments[weight].start) // inputs
    idx = segments[weight].start + inputs * torch.arange(C, device=cov.device)[:, None] + torch.arange(
        inputs, device=cov.device)
    features = a.to(cov.dtype)
    if bias is not None:
        idx = torch.cat([idx, segments[bias].start + torch.arange(C, device=cov.device)[:, None]], 1)
        features = torch.cat([features, features.new_ones(len(features), 1)], 1)
    flat = idx.reshape(-1)
    d = idx.shape[1]
    blocks = cov[flat][:, flat].reshape(C, d, C, d).transpose(1, 2)  # (C, C, d, d)
    return ((features @ blocks) * features).sum(-1).permute(2, 0, 1)


def _layer_jacobians(fn, centre: dict, x: torch.Tensor):
    r"""Every example's Jacobian at once where each adapted weight is the weight or bias of an ``nn.Linear`` called
    once on one row per example: with :math:`g_{cn} = \partial f_c(x_n) / \partial s_n` the output's pullback to the
    layer's output (one batched backward pass per output, all examples at once), :math:`J_W = g_{cn} a_n^\top` and
    :math:`J_b = g_{cn}` (a last layer's :math:`g` is the identity). Each weight must reach the outputs through its
    layer only (:func:`_used_once`). ``(mean, {name: (B, C, *shape)}, last)`` (``last``: the weight's and bias's names
    and the layer's inputs where the adapted weights are the last layer's only, else None), or None (the caller then
    vmaps a Jacobian per example)."""
    from ..inference.kfac import LayerRecorder

    values = {k: v.detach().requires_grad_(True) for k, v in centre.items()}
    with torch.enable_grad(), LayerRecorder() as recorder:
        out = fn(values, x)
    found = {}
    for call in recorder.calls:
        for role, p in (("weight", call.weight), ("bias", call.bias)):
            name = next((k for k, v in values.items() if v is p), None)
            if name is not None:
                if name in found or call.conv or len(call.shape) != 2 or call.shape[0] != len(x):
                    return None
                found[name] = (role, call)
    if len(found) != len(values) or out.dim() != 2:
        return None
    eye = torch.eye(out.shape[1], dtype=out.dtype, device=out.device)
    last = get_gradient_edge(out)
    pull = {id(c): eye.expand(len(x), -1, -1) for _, c in found.values()  # a last layer: g = I
            if c.edge is not None and c.edge.node is last.node and c.edge.output_nr == last.output_nr}
    calls = list({id(c): c for _, c in found.values() if id(c) not in pull}.values())
    names = list(values)
    if calls:
        grads = torch.autograd.grad(out, [c.edge for c in calls], grad_outputs=eye[:, None, :].expand(-1, *out.shape),
                                    is_grads_batched=True, retain_graph=True, allow_unused=True)
        if any(g is None for g in grads):
            return None
        pull.update({id(c): g.transpose(0, 1) for c, g in zip(calls, grads)})  # (B, C, out)
    jac = {}
    for name, (role, call) in found.items():
        g = pull[id(call)]
        jac[name] = g if role == "bias" else g[..., None] * call.a.detach()[:, None, None, :]
    if not _used_once(out, [values[k] for k in names]):  # each weight reaches the outputs through its layer only
        return None
    roles = {} if calls else {role: name for name, (role, _) in found.items()}  # the last layer's weights only
    last = (roles["weight"], roles.get("bias"), next(iter(found.values()))[1].a.detach()) if "weight" in roles else None
    return out.detach(), jac, last


def _used_once(out: torch.Tensor, leaves: list[torch.Tensor]) -> bool:
    """Whether each of the ``leaves`` enters the autograd graph of ``out`` by exactly one edge (a walk of the graph,
    no backward pass): a weight whose layer's output is on the graph and that is used once reaches ``out`` through that
    layer only."""
    if out.grad_fn is None:
        return False
    uses = {id(t): 0 for t in leaves}
    seen, stack = {out.grad_fn}, [out.grad_fn]
    while stack:
        for node, _ in stack.pop().next_functions:
            if node is None:
                continue
            leaf = getattr(node, "variable", None)  # an AccumulateGrad: the edge into a leaf
            if leaf is not None:
                if id(leaf) in uses:
                    uses[id(leaf)] += 1
            elif node not in seen:
                seen.add(node)
                stack.append(node)
    return all(n == 1 for n in uses.values())


def _couples_examples(net) -> bool:
    """Whether one example's output depends on the others' (normalisation by the batch's own statistics)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in net.modules())


def _probit(mean: torch.Tensor, cov: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    var = torch.diagonal(cov, dim1=-2, dim2=-1)
    return torch.softmax(mean / torch.sqrt(1 + math.pi / 8 * var), -1)


def _bridge(mean: torch.Tensor, cov: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    """The Laplace bridge: Dirichlet concentrations from the Gaussian's mean and marginal variances (after centring
    the logits, as the bridge assumes a zero-sum logit space); its mean is the prediction."""
    var = torch.diagonal(cov, dim1=-2, dim2=-1).clamp_min(1e-12)
    mean = mean - mean.mean(-1, keepdim=True)
    C = mean.shape[-1]
    alpha = (1 - 2 / C + torch.exp(mean) / C**2 * torch.exp(-mean).sum(-1, keepdim=True)) / var
    return alpha / alpha.sum(-1, keepdim=True)


def _monte_carlo(mean: torch.Tensor, cov: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    C = mean.shape[-1]
    jitter = 1e-10 * torch.eye(C, dtype=cov.dtype, device=cov.device) * (
        1 + torch.diagonal(cov, dim1=-2, dim2=-1).amax(-1)[:, None, None])
    L = torch.linalg.cholesky(cov + jitter)
    g = torch.Generator(device=mean.device).manual_seed(int(seed))
    eps = torch.randn((num_samples,) + tuple(mean.shape), generator=g, dtype=mean.dtype, device=mean.device)
    logits = mean + torch.einsum("bck,sbk->sbc", L, eps)
    return torch.softmax(logits, -1).mean(0)


#: how class probabilities are read off Gaussian logits
LINKS = {"probit": _probit, "bridge": _bridge, "mc": _monte_carlo}
