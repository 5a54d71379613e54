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

from ..diagnostics import CheckpointError, InferenceError, NonFiniteEnergyError
from ..inference.registry import positive_float, positive_int, probability
from ..state import resolve_seed, seeded
from .base import Batch, Objective, resolve_objective
from .checkpoint import check_writable, load_checkpoint, save_checkpoint

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
        ``"cd"``, ``"pcd"``, ``"nce"``, ``"margin"``, ``"infonce"``, ``"dsm"``, ``"ssm"``, ``"dae"``, ``"masked"``, ``"sparse_coding"``, ``"free_energy"``, ``"jem"``,
        ``"kmeans"``, ``"vae"``, or a configured object (``pyebm.train.CD(k=50)``). ``options`` set the objective's
        fields (``fit(e, x, "dsm", sigma=0.05)``).
    steps : int
        Total optimiser steps (when resuming: the total including the steps already done).
    batch_size : int
        Examples per step, drawn with replacement.
    optimizer : torch.optim.Optimizer or callable, optional
        Default ``Adam(lr=lr)``; a callable receives the list of parameters. The objective's own parameters
        (NCE's log Z, a VAE's encoder) are added to a given optimizer.
    lr, lr_decay : float
        Learning rate (> 0); every learning rate decays geometrically to ``lr_decay`` times its initial value by the
        last step (in (0, 1]; 1: constant), so the final iterates settle instead of jittering at the stochastic-
        gradient noise level.
    seed : int, optional
        All randomness (batches, noise, chains) comes from one generator seeded here, and torch's global RNG (dropout)
        is seeded from it inside the run; the caller's global RNG state is restored.
    progress : bool
        Show a progress bar.
    callback : callable, optional
        ``callback(step, loss)`` after every step; returning True stops training.
    checkpoint, checkpoint_every
        Write a checkpoint to ``checkpoint`` every ``checkpoint_every`` steps and at the end: atomically (a kill
        mid-write leaves the last good one), the previous one kept as ``<checkpoint>.prev``, with a content hash.
        The directory is checked before the first step.
    resume : dict or path, optional
        A checkpoint to continue from (``TrainResult.checkpoint()`` or a file): the run continues exactly as the
        uninterrupted run with the same seed would have. It must come from the same method and options.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        Unknown method, bad settings or data, or an energy of the wrong shape.
    pyebm.CheckpointError
        A checkpoint path that cannot be written, or a checkpoint that cannot be resumed (missing, corrupted,
        truncated, foreign, or from another method or options).
    pyebm.InferenceError
        A non-finite loss, parameter or negative, naming the training step (and Langevin step).
    """
    if not isinstance(energy, nn.Module):
        raise TypeError(f"energy must be an nn.Module (e.g. a pyebm.Energy) whose parameters are trained, "
                        f"got {type(energy).__name__}.")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("fit cannot train under torch.inference_mode(); call it outside that block.")
    objective = resolve_objective(method, options)
    positive_int("fit", "steps", steps, minimum=0)
    positive_int("fit", "batch_size", batch_size)
    positive_float("fit", "lr", lr)
    probability("fit", "lr_decay", lr_decay, closed_right=True)
    if checkpoint is not None:
        checkpoint = check_writable(checkpoint)
        positive_int("fit", "checkpoint_every", checkpoint_every, minimum=0)
    parts, single, n = _batches(data)
    saved = None if resume is None else load_checkpoint(resume)
    if saved is not None:
        _check_resumable(saved, objective)
    seed = saved["seed"] if saved is not None else resolve_seed(seed)
    run = _Training(energy, objective, parts if not single else parts[0], n, batch_size, lr_decay, steps, seed)
    start = time.perf_counter()
    with seeded(seed), torch.enable_grad():
        run.setup(optimizer, lr, saved)
        run.loop(progress, callback, checkpoint, checkpoint_every)
        final = run.snapshot()
        if checkpoint is not None:
            save_checkpoint(checkpoint, final)
    return TrainResult(objective.name, run.history, run.evaluations, run.state, time.perf_counter() - start, seed,
                       objective, final)


def _options(objective: Objective) -> dict[str, str]:
    """The objective's settings as text: what a checkpoint records and a resume compares (no objects pickled)."""
    return {k: repr(v) for k, v in dataclasses.asdict(objective).items()}


def _check_resumable(saved: dict, objective: Objective) -> None:
    if not isinstance(saved, dict) or "method" not in saved:
        raise CheckpointError("resume must be a checkpoint written by pyebm.train.fit (a path or "
                              "TrainResult.checkpoint()).")
    if saved["method"] != objective.name:
        raise CheckpointError(f"the checkpoint was written by method {saved['method']!r}; resuming it with "
                              f"{objective.name!r} would mix two objectives. Pass method={saved['method']!r}.")
    now = _options(objective)
    changed = {k: (saved["options"].get(k), v) for k, v in now.items() if saved["options"].get(k) != v}
    if changed:
        what = "; ".join(f"{k}: {a} in the checkpoint, {b} now" for k, (a, b) in changed.items())
        raise CheckpointError(f"the checkpoint's {objective.name!r} options differ from this call's ({what}); resume "
                              "with the same options, or start a new run.")


class _Training:
    """The state of one training run: the objective's state, the optimiser, the generator and the history."""

    def __init__(self, energy, objective, data, n, batch_size, lr_decay, steps, seed):
        self.energy, self.objective, self.data, self.n = energy, objective, data, n
        self.batch_size, self.lr_decay, self.steps, self.seed = batch_size, lr_decay, steps, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.history, self.evaluations, self.done = [], 0, 0

    def setup(self, optimizer, lr: float, saved: dict | None) -> None:
        self.state = self.objective.setup(self.energy, self.data, self.generator)
        params = [p for p in self.energy.parameters() if p.requires_grad] + list(self.state.parameters())
        if not params:
            raise ValueError("the energy has no trainable parameters.")
        self.opt = _make_optimizer(optimizer, params, lr)
        if saved is None:
            return
        try:
            self.energy.load_state_dict(saved["energy"])
            self.state.load_state_dict(saved["state"])
            if "replay" in saved:
                self.state.replay.load_state_dict(saved["replay"])
            self.opt.load_state_dict(saved["optimizer"])
            self.generator.set_state(saved["generator"])
            torch.set_rng_state(saved["global_rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise CheckpointError(f"the checkpoint does not fit this energy or optimiser: {err}") from err
        self.history, self.evaluations, self.done = list(saved["loss"]), saved["evaluations"], saved["step"]

    def snapshot(self) -> dict:
        ck = {"method": self.objective.name, "options": _options(self.objective), "seed": self.seed,
              "step": self.done, "loss": list(self.history), "evaluations": self.evaluations,
              "energy": {k: v.clone() for k, v in self.energy.state_dict().items()},
              "state": {k: v.clone() for k, v in self.state.state_dict().items()},
              "optimizer": copy.deepcopy(self.opt.state_dict()), "generator": self.generator.get_state(),
              "global_rng": torch.get_rng_state()}
        if getattr(self.state, "replay", None) is not None:
            ck["replay"] = self.state.replay.state_dict()
        return ck

    def batch(self):
        idx = torch.randint(self.n, (self.batch_size,), generator=self.generator)
        return self.data[idx] if isinstance(self.data, torch.Tensor) else tuple(p[idx] for p in self.data)

    def step(self) -> float:
        name, objective = self.objective.name, self.objective
        try:
            loss, evals = objective.loss(self.energy, self.batch(), self.state, self.generator)
        except (InferenceError, NonFiniteEnergyError) as err:
            raise InferenceError(f"fit(method={name!r}): at training step {self.done + 1}: {err}") from err
        if not bool(torch.isfinite(loss)):
            raise InferenceError(f"fit(method={name!r}): the loss became {float(loss.detach())} at training step "
                                 f"{self.done + 1}. Lower lr, clip gradients, or check that the energy is finite on "
                                 "the data.")
        for group in self.opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * self.lr_decay ** (self.done / max(self.steps, 1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        objective.after_step(self.energy, self.state)
        bad = [k for k, p in self.energy.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise InferenceError(f"fit(method={name!r}): parameters {bad} became non-finite at training step "
                                 f"{self.done + 1}; lower lr.")
        self.done += 1
        self.history.append(float(loss.detach()))
        self.evaluations += int(evals)
        return self.history[-1]

    def loop(self, progress: bool, callback, checkpoint, every: int) -> None:
        with tqdm(total=self.steps, initial=self.done, desc=f"fit[{self.objective.name}]", disable=not progress,
                  leave=False) as bar:
            while self.done < self.steps:
                loss = self.step()
                bar.update(1)
                if self.done % 20 == 0:
                    bar.set_postfix(loss=f"{loss:.4g}")
                if checkpoint is not None and every and self.done % every == 0:
                    save_checkpoint(checkpoint, self.snapshot())
                if callback is not None and callback(self.done, loss):
                    break
