"""Which weights of a network are latent, and the network as a function of them (``torch.func.functional_call``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_

from ..inference.potential import Site

__all__ = ["resolve_latents", "Functional"]


def resolve_latents(net: nn.Module, latents: str | Sequence[str] | Callable) -> dict[str, torch.Tensor]:
    """The named parameters chosen as latents: names, one name, or a predicate ``(name, parameter) -> bool``.

    Returns ``{name: trained value (detached)}`` in the network's order. Unknown names and an empty selection are
    a ValueError that lists what exists.
    """
    params = dict(net.named_parameters())
    available = list(params)
    if callable(latents) and not isinstance(latents, str):
        chosen = [n for n, p in params.items() if latents(n, p)]
    else:
        names = [latents] if isinstance(latents, str) else list(latents)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"latents {unknown} are not parameters of the network; it has {available[:12]}"
                             f"{' ...' if len(available) > 12 else ''}.")
        chosen = [n for n in available if n in set(names)]
    if not chosen:
        raise ValueError(f"the latent selection is empty; choose some of the network's parameters {available[:12]}.")
    return {n: params[n].detach().clone() for n in chosen}


class Functional:
    """``net`` as a pure function of its latent weights: ``forward(latents, inputs)``, the rest held fixed.

    Parameters and buffers are passed as detached copies, so calling it never changes ``net``. A network in training
    mode (BatchNorm normalising with the batch's own statistics, the usual test-time setting) is copied once and its
    BatchNorm layers told not to track running statistics, which makes it a pure function that ``vmap`` accepts.
    """

    def __init__(self, net: nn.Module, latents: dict[str, torch.Tensor]):
        if net.training and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            net = copy.deepcopy(net)
            replace_all_batch_norm_modules_(net)
        self.net = net
        self.names = list(latents)
        self.trained = latents
        self.shapes = {n: v.shape for n, v in latents.items()}
        tensors = [*((n, t, False) for n, t in net.named_parameters(remove_duplicate=False)),
                   *((n, t, True) for n, t in net.named_buffers(remove_duplicate=False))]
        self.fixed, seen = {}, set()  # each tensor under its first name (as named_parameters() gives it)
        for n, t, buffer in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                if buffer or n not in latents:
                    self.fixed[n] = t.detach().clone() if buffer else t.detach()
        self.dim = sum(v.numel() for v in latents.values())
        # tied weights (one tensor under two names) take functional_call's untying; else it is a no-op, and skipped
        self.tied = len(seen) < len(tensors)

    def __call__(self, values: dict[str, torch.Tensor], inputs) -> torch.Tensor:
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        return functional_call(self.net, {**self.fixed, **values}, args, tie_weights=self.tied)

    # the layout a Gaussian approximation needs: every latent lives on the reals
    @property
    def sites(self) -> list[Site]:
        return [Site(n, tuple(s), tuple(s), None, True) for n, s in self.shapes.items()]

    def constrain(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.unflatten(u)

    unpack = constrain

    # one flat vector <-> a dict of latent values (for the batched optimiser)
    def flatten(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([values[n].reshape(-1) for n in self.names])

    def unflatten(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for n in self.names:
            k = self.shapes[n].numel()
            out[n] = u[..., start : start + k].reshape(u.shape[:-1] + self.shapes[n])
            start += k
        return out
