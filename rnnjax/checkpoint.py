"""Atomic, verified checkpoints of any pytree of arrays (a ``TrainState``).

Format: one file, ``MAGIC + sha256(payload) + payload``, where the payload is
msgpack (``flax.serialization.msgpack_serialize``) of ``{"format", "version",
"metadata", "leaves": {keypath: array}}``. Leaves are stored by their key
path (``jax.tree_util.keystr``), so restoring into a freshly built template
checks every leaf's presence, shape and dtype and names the one that differs.
PRNG key arrays are stored as their raw key data.

Why one msgpack file and not orbax: a single file is what makes the save
atomic with nothing but ``os.replace`` (write to a temporary file in the same
directory, ``fsync``, rename, ``fsync`` the directory); orbax writes a
directory tree asynchronously, which needs its own commit protocol and a much
heavier import for a few hundred kilobytes of parameters.

Guarantees: ``save`` refuses a tree with a NaN/Inf (nothing is written); a
crash during ``save`` leaves the previous file intact, and the temporary file
it leaves is removed by the next ``save`` to the same path; the file's mode
follows the umask like any other file (``0o666 & ~umask``); ``load`` raises
``CheckpointError`` with a one-line message for a missing, truncated,
corrupted or incompatible file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from rnnjax.rundir import file_mode, remove_stale_temporaries

MAGIC = b"RNNJAX-CKPT\x00"
FORMAT = "rnnjax-checkpoint"
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint cannot be written (non-finite values) or read (missing, corrupted, incompatible)."""


def _is_key(x) -> bool:
    """``x`` is (or describes, as a ``ShapeDtypeStruct`` does) an array of typed PRNG keys."""
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = {}
    for path, leaf in leaves:
        if _is_key(leaf):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def _non_finite(flat: dict[str, np.ndarray]) -> list[str]:
    return [k for k, a in flat.items() if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a))]


def non_finite_leaves(tree: Any) -> list[str]:
    """Key paths of the floating-point leaves of ``tree`` that hold a NaN or Inf."""
    return _non_finite(_flatten(tree))


def save(path: str | os.PathLike, tree: Any, metadata: dict | None = None) -> None:
    """Write ``tree`` to ``path`` atomically.

    The bytes go to a temporary file in the same directory, are flushed and
    fsync'ed, then ``os.replace`` renames it onto ``path`` (atomic on POSIX) and
    the directory is fsync'ed: a reader sees the old or the new checkpoint,
    never a partial one. Temporary files of an earlier, interrupted save to
    ``path`` are removed first (one writer per path: ``rnnjax train`` holds the
    run directory's lock).

    Args:
      path: destination file.
      tree: a pytree of arrays (e.g. a ``TrainState``).
      metadata: small JSON-like dict stored alongside (e.g. ``{"step": 100}``).

    Raises:
      CheckpointError: a floating-point leaf is not finite (nothing is written).
    """
    leaves = _flatten(tree)  # one device-to-host copy, used for the check and the payload
    bad = _non_finite(leaves)
    if bad:
        raise CheckpointError(f"refusing to save non-finite values to {path}: {', '.join(bad[:5])}")
    payload = serialization.msgpack_serialize(
        {"format": FORMAT, "version": VERSION, "metadata": dict(metadata or {}), "leaves": leaves}
    )
    data = MAGIC + hashlib.sha256(payload).digest() + payload
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(path)  # left by a save that was killed mid-write
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, file_mode())  # mkstemp creates 0600; a checkpoint is shared like every other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path) -> dict:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror}") from None
    head = len(MAGIC) + 32
    if len(data) < head or not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not an rnnjax checkpoint (bad header)")
    digest, payload = data[len(MAGIC) : head], data[head:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupted (checksum mismatch)")
    try:
        content = serialization.msgpack_restore(payload)
    except Exception as err:  # noqa: BLE001 - any decoding failure is a corrupted file
        raise CheckpointError(f"checkpoint {path} is corrupted ({type(err).__name__})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnjax checkpoint")
    if content.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {content.get('version')}, expected {VERSION}")
    return content


def read_leaves(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The stored leaves of the checkpoint at ``path`` by key path (no template needed; PRNG keys as raw data)."""
    return {name: np.asarray(value) for name, value in _read(path)["leaves"].items()}


def load_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` dict stored with the checkpoint at ``path`` (verifies the file)."""
    return dict(_read(path)["metadata"])


def load(path: str | os.PathLike, template: Any) -> tuple[Any, dict]:
    """Read the checkpoint at ``path`` into the structure of ``template``.

    Args:
      path: a file written by ``save``.
      template: a pytree with the expected structure, shapes and dtypes (e.g.
        a freshly initialised ``TrainState``; ``jax.eval_shape`` output works too).

    Returns:
      ``(tree, metadata)``: ``tree`` has ``template``'s structure with the stored values.

    Raises:
      CheckpointError: missing/corrupted file, or a leaf missing or of another
        shape or dtype than in ``template`` (the message names the leaf).
    """
    content = _read(path)
    stored = content["leaves"]
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = {jax.tree_util.keystr(p) for p, _ in leaves}
    extra = sorted(set(stored) - expected)
    if extra:
        raise CheckpointError(f"checkpoint {path} is incompatible: unexpected entry {extra[0]}")
    out = []
    for p, leaf in leaves:
        name = jax.tree_util.keystr(p)
        if name not in stored:
            raise CheckpointError(f"checkpoint {path} is incompatible: missing entry {name}")
        value = np.asarray(stored[name])
        is_key = _is_key(leaf)
        if is_key:
            want_shape = tuple(leaf.shape) + tuple(jax.random.key_data(jax.random.key(0)).shape)
            want_dtype = np.dtype(np.uint32)
        else:
            want_shape, want_dtype = tuple(np.shape(leaf)), np.dtype(leaf.dtype)
        if value.shape != want_shape or value.dtype != want_dtype:
            raise CheckpointError(
                f"checkpoint {path} is incompatible: {name} expected {want_dtype}{want_shape}, "
                f"got {value.dtype}{value.shape}"
            )
        out.append(jax.random.wrap_key_data(value) if is_key else jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, out), dict(content["metadata"])
