"""The baselines test-time inference is measured against: the test batch's own normalisation statistics, and TENT's
gradient step on the prediction entropy."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .energies import entropy

__all__ = ["batch_statistics", "tent"]


@contextmanager
def batch_statistics(net: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, normalisation layers of ``net`` normalise with the batch's own statistics (train mode);
    no weight changes. Use it around :func:`pyebm.ttt.adapt` / :func:`pyebm.ttt.predict` to adapt on top of those
    statistics. The running statistics are restored on exit, so the block has no side effect on ``net``."""
    was = net.training
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    net.train()
    try:
        yield net
    finally:
        net.train(was)
        with torch.no_grad():
            for k, v in net.named_buffers():
                v.copy_(buffers[k])


def tent(net: nn.Module, x: torch.Tensor, latents: Sequence[str], lr: float = 1e-3, steps: int = 1) -> torch.Tensor:
    r"""TENT (Wang et al., 2021): ``steps`` Adam steps on the batch's mean prediction entropy
    :math:`\frac1n\sum_i -\sum_c p_c(x_i)\log p_c(x_i)` over the named parameters, normalising with the batch's
    statistics; returns the adapted class probabilities. ``net`` is copied, never modified."""
    net = copy.deepcopy(net)
    names = set(latents)
    params = [p for n, p in net.named_parameters() if n in names]
    if len(params) != len(names):
        raise ValueError(f"latents {sorted(names - {n for n, _ in net.named_parameters()})} are not parameters of net.")
    opt = torch.optim.Adam(params, lr=lr)
    net.train()
    for _ in range(steps):
        loss = entropy(net, x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return torch.softmax(net(x), -1)
