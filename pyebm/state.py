"""Global state kept local: RNG seeds and Pyro's param store.

Every public function that samples or optimises runs inside these scopes, so the global RNG
state and Pyro's param store are the same after it returns as before.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import pyro
import torch

__all__ = ["seeded", "isolated_param_store", "resolve_seed", "copy_param_state"]

#: whether a :func:`seeded` block is running (in this thread or task): an inner one then seeds without saving and
#: restoring the generators' states, which the outermost block restores on its way out
_RESTORING: ContextVar[bool] = ContextVar("pyebm_seeded", default=False)


def resolve_seed(seed: int | None) -> int:
    """The seed to use: ``seed`` itself (an int in [0, 2**64)), or a fresh one from the OS (not from the global
    RNG)."""
    if seed is None:
        return secrets.randbits(31)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}.")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must lie in [0, 2**64), got {seed}.")
    return int(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch for the block, then restore their previous states.

    torch's CPU generator always; CUDA's where CUDA is available: their states restored where CUDA was initialised on
    entry, else seeded for when it is (it then keeps the block's state: it had none before). Unlike
    ``torch.manual_seed``, no other accelerator's lazy seeding is queued on machines without one (a call costs
    microseconds, not a captured stack per backend). A block inside another seeds the same way and leaves the
    restoring to the outermost."""
    if _RESTORING.get():  # inside another seeded block, which gives the caller's states back
        _seed(seed)
        yield
        return
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    token = _RESTORING.set(True)
    try:
        _seed(seed)
        yield
    finally:
        _RESTORING.reset(token)
        random.setstate(py_state)
        np.random.set_state(np_state)  # (saving and restoring NumPy's state is most of this block's cost: once only)
        torch.set_rng_state(torch_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)


def _seed(seed: int) -> None:
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy's legacy seeding takes 32 bits


def copy_param_state(state: dict) -> dict:
    """A deep copy of a Pyro param-store state (its tensors cloned: optimisers update them in place)."""
    params = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in state["params"].items()}
    return {"params": params, "constraints": dict(state["constraints"])}


@contextmanager
def isolated_param_store(state: dict | None = None) -> Iterator[None]:
    """Run the block on an empty Pyro param store (or one holding a copy of ``state``), then put the caller's
    back, untouched."""
    store = pyro.get_param_store()
    saved = store.get_state()
    store.clear()
    if state is not None:
        store.set_state(copy_param_state(state))
    try:
        yield
    finally:
        store.clear()
        store.set_state(saved)
