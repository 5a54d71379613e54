"""Training checkpoints that survive a kill mid-write, reject corruption and never execute code.

A checkpoint file holds a small envelope, ``{"format", "version", "sha256", "payload"}``, where the payload is the
training state serialised by ``torch.save`` and the hash is over those bytes. Writing goes to a temporary file in the
same directory, flushed and fsynced, then moved into place with ``os.replace`` (atomic on POSIX), after the previous
checkpoint is kept as ``<path>.prev``; a kill at any moment leaves either the old file or the new one, never half of
one. Loading uses ``torch.load(weights_only=True)`` (tensors and plain containers only: no pickled code runs), checks
the envelope and the hash, and raises :class:`pyebm.CheckpointError` for anything else.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import tempfile

import torch

from ..diagnostics import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "check_writable", "FORMAT"]

FORMAT, VERSION = "pyebm-training-checkpoint", 1


def _serialise(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def check_writable(path: str | os.PathLike) -> pathlib.Path:
    """The checkpoint path, refused before training starts when its directory is missing or not writable."""
    path = pathlib.Path(path)
    folder = path.parent if str(path.parent) else pathlib.Path(".")
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint directory {str(folder)!r} does not exist; create it first (checked before "
                              "training, so that no run is lost at its first save).")
    if not os.access(folder, os.W_OK):
        raise CheckpointError(f"checkpoint directory {str(folder)!r} is not writable.")
    return path


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically, keeping the previous checkpoint as ``<path>.prev``."""
    path = pathlib.Path(path)
    data = _serialise(payload)
    envelope = _serialise({"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(data).hexdigest(),
                           "payload": data})
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(envelope)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, path.with_name(path.name + ".prev"))
        os.replace(tmp, path)
        try:  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(source: str | os.PathLike | dict) -> dict:
    """The training state saved by :func:`save_checkpoint` (or an in-memory ``TrainResult.checkpoint()``)."""
    if isinstance(source, dict):
        return source
    path = pathlib.Path(source)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}.")
    try:
        envelope = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - truncated, foreign or tampered files fail in many ways inside torch
        raise CheckpointError(f"{str(path)!r} is not a readable pyebm checkpoint ({type(err).__name__}: "
                              f"{str(err)[:200]}); the previous one, if any, is {str(path)!r}.prev.") from err
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a pyebm training checkpoint.")
    if envelope.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} has checkpoint version {envelope.get('version')!r}; this pyebm reads "
                              f"version {VERSION}.")
    data = envelope.get("payload")
    if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != envelope.get("sha256"):
        raise CheckpointError(f"{str(path)!r} is corrupted: its content does not match its hash. Resume from "
                              f"{str(path)!r}.prev, the previous checkpoint.")
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{str(path)!r} holds a payload that cannot be read safely ({err}).") from err
