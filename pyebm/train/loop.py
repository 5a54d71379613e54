"""One training loop for every objective: ``pyebm.train.fit``."""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from ..diagnostics import InferenceError, NonFiniteEnergyError
from ..state import resolve_seed, seeded
from .base import Batch, Objective, resolve_objective

__all__ = ["fit", "TrainResult"]


@dataclass
class TrainResult:
    """What :func:`fit` returns (the energy itself is trained in place).

    Attributes
    ----------
    method : str
    loss : list of float
        The loss at every step.
    evaluations : int
        Energy evaluations (points at which :math:`E` or :math:`\\nabla E` was computed), summed over steps.
    state : nn.Module
        The objective's own state: NCE's ``log_z``, the VAE's ``encoder``, PCD's ``replay`` buffer.
    wall_time : float
        Seconds spent in this call.
    seed : int
    """

    method: str
    loss: list
    evaluations: int
    state: nn.Module
    wall_time: float
    seed: int
    objective: Objective = field(repr=False, default=None)
    _checkpoint: dict = field(repr=False, default=None)

    @property
    def buffer(self):
        """The persistent chains (:class:`pyebm.samplers.ReplayBuffer`) of PCD, else None."""
        return getattr(self.state, "replay", None)

    @property
    def steps(self) -> int:
        return len(self.loss)

    def checkpoint(self) -> dict:
        """Everything needed to resume: ``fit(energy, data, steps=more, resume=result.checkpoint())``."""
        return self._checkpoint


def _batches(data: Batch) -> tuple[tuple, bool, int]:
    parts = (data,) if isinstance(data, torch.Tensor) else tuple(data)
    if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
        raise TypeError("data must be a tensor of examples or a tuple of aligned tensors.")
    n = parts[0].shape[0] if parts[0].dim() else 0
    if n == 0 or any(p.dim() == 0 or p.shape[0] != n for p in parts):
        raise ValueError(f"data tensors must share a non-empty first (example) dimension, got shapes "
                         f"{[tuple(p.shape) for p in parts]}.")
    for p in parts:
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise ValueError("data contain NaN or infinite values.")
    return parts, isinstance(data, torch.Tensor), n


def _make_optimizer(optimizer, params: list, lr: float) -> torch.optim.Optimizer:
    if optimizer is None:
        return torch.optim.Adam(params, lr=lr)
    if isinstance(optimizer, torch.optim.Optimizer):
        known = {id(p) for g in optimizer.param_groups for p in g["params"]}
        extra = [p for p in params if id(p) not in known]
        if extra:
            optimizer.add_param_group({"params": extra})
        return optimizer
    if callable(optimizer):
        return optimizer(params)
    raise TypeError("optimizer must be None, a torch.optim.Optimizer or a callable params -> optimizer.")


def fit(
    energy: nn.Module,
    data: Batch,
    method: str | Objective = "cd",
    *,
    steps: int = 1000,
    batch_size: int = 256,
    optimizer: torch.optim.Optimizer | Callable | None = None,
    lr: float = 1e-3,
    lr_decay: float = 1.0,
    seed: int | None = None,
    progress: bool = True,
    callback: Callable[[int, float], bool | None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    resume: dict | str | os.PathLike | None = None,
    **options,
) -> TrainResult:
    r"""Train the parameters of ``energy`` in place with one of the objectives of :mod:`pyebm.train`.

    Parameters
    ----------
    energy : nn.Module
        The energy (a :class:`pyebm.Energy` or any module); its parameters are trained.
    data : tensor or tuple of tensors
        Training examples along the first dimension; pairs ``(x, y)`` for ``"infonce"``, ``(x, labels)`` for a
        labelled ``"margin"``.
    method : str or objective
        ``"cd"``, ``"pcd"``, ``"nce"``, ``"margin"``, ``"infonce"``, ``"dsm"``, ``"ssm"``, ``"sparse_coding"``,
        ``"kmeans"``, ``"vae"``, or a configured object (``pyebm.train.CD(k=50)``). ``options`` set the objective's
        fields (``fit(e, x, "dsm", sigma=0.05)``).
    steps : int
        Total optimiser steps (when resuming: the total including the steps already done).
    batch_size : int
        Examples per step, drawn with replacement.
    optimizer : torch.optim.Optimizer or callable, optional
        Default ``Adam(lr=lr)``; a callable receives the list of parameters. The objective's own parameters
        (NCE's log Z, a VAE's encoder) are added to a given optimizer.
    lr_decay : float
        Every learning rate decays geometrically to ``lr_decay`` times its initial value by the last step
        (1: constant), so the final iterates settle instead of jittering at the stochastic-gradient noise level.
    seed : int, optional
        All randomness (batches, noise, chains) comes from one generator seeded here; the global RNG is untouched.
    progress : bool
        Show a progress bar.
    callback : callable, optional
        ``callback(step, loss)`` after every step; returning True stops training.
    checkpoint, checkpoint_every
        Write a checkpoint (``torch.save``) to ``checkpoint`` every ``checkpoint_every`` steps and at the end.
    resume : dict or path, optional
        A checkpoint to continue from (``TrainResult.checkpoint()`` or a file): the run continues exactly as the
        uninterrupted run with the same seed would have.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        Unknown method, bad data, or an energy of the wrong shape.
    pyebm.InferenceError
        A non-finite loss, parameter or negative, naming the training step (and Langevin step).
    """
    if not isinstance(energy, nn.Module):
        raise TypeError(f"energy must be an nn.Module (e.g. a pyebm.Energy) whose parameters are trained, "
                        f"got {type(energy).__name__}.")
    objective = resolve_objective(method, options)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}.")
    if not 0 < lr_decay <= 1:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    parts, single, n = _batches(data)
    if isinstance(resume, (str, os.PathLike)):
        resume = torch.load(resume, weights_only=False)
    seed = resume["seed"] if resume is not None else resolve_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with seeded(seed):
        state = objective.setup(energy, parts[0] if single else tuple(parts), generator)
        params = [p for p in energy.parameters() if p.requires_grad] + list(state.parameters())
        if not params:
            raise ValueError("the energy has no trainable parameters.")
        opt = _make_optimizer(optimizer, params, lr)
        history, evaluations, done = [], 0, 0
        if resume is not None:
            energy.load_state_dict(resume["energy"])
            state.load_state_dict(resume["state"])
            if "replay" in resume:
                state.replay.load_state_dict(resume["replay"])
            opt.load_state_dict(resume["optimizer"])
            generator.set_state(resume["generator"])
            history, evaluations, done = list(resume["loss"]), resume["evaluations"], resume["step"]

        def snapshot() -> dict:
            ck = {"method": objective.name, "options": dataclasses.asdict(objective), "seed": seed,
                  "step": done, "loss": list(history), "evaluations": evaluations,
                  "energy": {k: v.clone() for k, v in energy.state_dict().items()},
                  "state": {k: v.clone() for k, v in state.state_dict().items()},
                  "optimizer": copy.deepcopy(opt.state_dict()), "generator": generator.get_state()}
            if getattr(state, "replay", None) is not None:
                ck["replay"] = state.replay.state_dict()
            return ck

        with tqdm(total=steps, initial=done, desc=f"fit[{objective.name}]", disable=not progress, leave=False) as bar:
            while done < steps:
                idx = torch.randint(n, (batch_size,), generator=generator)
                batch = parts[0][idx] if single else tuple(p[idx] for p in parts)
                try:
                    loss, evals = objective.loss(energy, batch, state, generator)
                except (InferenceError, NonFiniteEnergyError) as err:
                    raise InferenceError(f"fit(method={objective.name!r}): at training step {done + 1}: {err}") from err
                if not bool(torch.isfinite(loss)):
                    raise InferenceError(
                        f"fit(method={objective.name!r}): the loss became {float(loss.detach())} at training step {done + 1}. "
                        "Lower lr, clip gradients, or check that the energy is finite on the data."
                    )
                for group in opt.param_groups:
                    group.setdefault("initial_lr", group["lr"])
                    group["lr"] = group["initial_lr"] * lr_decay ** (done / max(steps, 1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                objective.after_step(energy, state)
                bad = [name for name, p in energy.named_parameters() if not bool(torch.isfinite(p).all())]
                if bad:
                    raise InferenceError(f"fit(method={objective.name!r}): parameters {bad} became non-finite at "
                                         f"training step {done + 1}; lower lr.")
                done += 1
                history.append(float(loss.detach()))
                evaluations += int(evals)
                bar.update(1)
                if done % 20 == 0:
                    bar.set_postfix(loss=f"{history[-1]:.4g}")
                if checkpoint is not None and checkpoint_every and done % checkpoint_every == 0:
                    torch.save(snapshot(), checkpoint)
                if callback is not None and callback(done, history[-1]):
                    break
        final = snapshot()
        if checkpoint is not None:
            torch.save(final, checkpoint)
    return TrainResult(objective.name, history, evaluations, state, time.perf_counter() - start, seed, objective, final)
