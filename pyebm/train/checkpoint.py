"""Training checkpoints that survive a kill mid-write, reject corruption and never execute code.

A checkpoint file is a magic string, the SHA-256 of the rest, and the training state serialised by ``torch.save``:
any changed bit anywhere is caught. Writing goes to a temporary file in the same directory, flushed and fsynced,
then moved into place with ``os.replace`` (atomic on POSIX), after the previous checkpoint is kept as
``<path>.prev``; a kill at any moment leaves either the old file or the new one, never half of one. Loading checks the
magic and the hash, then uses ``torch.load(weights_only=True)`` (tensors and plain containers only: no pickled code
runs), and raises :class:`pyebm.CheckpointError` for anything else.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import shutil
import tempfile

import torch

from ..diagnostics import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "check_writable", "MAGIC"]

#: the first bytes of every checkpoint file (format and version)
MAGIC = b"PYEBM-CHECKPOINT-1\n"


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
    envelope = MAGIC + hashlib.sha256(data).digest() + data
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(envelope)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():  # keep the previous one: linked (or copied) aside, so that `path` never goes missing
            _keep(path, path.with_name(path.name + ".prev"))
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


def _keep(path: pathlib.Path, previous: pathlib.Path) -> None:
    staging = previous.with_name(previous.name + ".tmp")
    if staging.exists():
        staging.unlink()
    try:
        os.link(path, staging)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(path, staging)
    os.replace(staging, previous)


def load_checkpoint(source: str | os.PathLike | dict) -> dict:
    """The training state saved by :func:`save_checkpoint` (or an in-memory ``TrainResult.checkpoint()``)."""
    if isinstance(source, dict):
        return source
    path = pathlib.Path(source)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}.")
    raw = path.read_bytes()
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{str(path)!r} is not a pyebm training checkpoint (written by pyebm.train.fit).")
    digest, data = raw[len(MAGIC) : len(MAGIC) + 32], raw[len(MAGIC) + 32 :]
    if hashlib.sha256(data).digest() != digest:
        raise CheckpointError(f"{str(path)!r} is corrupted or truncated: its content does not match its hash. Resume "
                              f"from {str(path)!r}.prev, the previous checkpoint.")
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - whatever torch refuses (code in a pickle) is not a usable checkpoint
        raise CheckpointError(f"{str(path)!r} holds a payload that cannot be read safely ({type(err).__name__}: "
                              f"{str(err)[:200]}).") from err
