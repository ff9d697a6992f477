"""Metrics writers: one interface, JSON lines (default) and TensorBoard event files.

A writer receives three kinds of records:

- ``scalars(step, values, group="train")``: training metrics of one step
  (``loss``, ``grad_norm``, ``skipped``, ``wall_time_s``, ``accuracy``);
- ``scalars(step, values, group="eval")``: one evaluation (``loss``,
  ``baseline_loss``, ``accuracy``);
- ``profile(step, norms)``: the per-step gradient-norm profile
  ``[||dL/dh_t|| for t < T]``, or one such row per direction ``(2, T)`` for a
  bidirectional model (forward, backward).

``JsonlWriter(out)`` appends them to ``metrics.jsonl``, ``eval.jsonl`` and
``gradflow.jsonl``. ``TensorBoardWriter(out / "tensorboard")`` (optional extra
``tensorboard``: the ``tensorboardX`` package) writes event files that
``tensorboard --logdir`` shows: scalars ``train/<name>``, ``eval/<name>``,
``gradflow/first_step_norm`` and ``gradflow/last_step_norm``, and the profile
as an image ``gradflow/profile`` (log-scale plot of the norm against t).
``MultiWriter`` fans out to several.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Protocol, Sequence

GROUPS = ("train", "eval")
JSONL_FILES = {"train": "metrics.jsonl", "eval": "eval.jsonl", "profile": "gradflow.jsonl"}
TENSORBOARD_DIR = "tensorboard"


class MetricsWriter(Protocol):
    """What the training loop writes to (every method is called from the host, between compiled chunks)."""

    def scalars(self, step: int, values: dict, *, group: str = "train") -> None: ...

    def profile(self, step: int, norms: Sequence[float]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise ValueError(f"group: expected one of {GROUPS}, got {group!r}")


def _finite_or_none(x):
    if x is None or isinstance(x, bool):
        return x
    x = float(x)
    return x if math.isfinite(x) else None


def _profile_rows(norms) -> list[list]:
    """``(T,)`` or ``(D, T)`` norms as D lists of finite floats or None."""
    import numpy as np

    rows = np.asarray(norms, dtype=np.float64)
    if rows.ndim not in (1, 2):
        raise ValueError(f"norms: expected shape (T,) or (directions, T), got {rows.shape}")
    return [[_finite_or_none(x) for x in row] for row in np.atleast_2d(rows)]


def _is_flat(norms) -> bool:
    import numpy as np

    return np.ndim(norms) == 1


class JsonlWriter:
    """Appends one JSON object per record to ``DIR/metrics.jsonl``, ``eval.jsonl``, ``gradflow.jsonl``."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        self._files: dict[str, Any] = {}

    def _file(self, kind: str):
        if kind not in self._files:
            self._files[kind] = open(os.path.join(self.directory, JSONL_FILES[kind]), "a")
        return self._files[kind]

    def scalars(self, step: int, values: dict, *, group: str = "train") -> None:
        _check_group(group)
        row = {"step": int(step), **{k: _finite_or_none(v) for k, v in values.items()}}
        self._file(group).write(json.dumps(row) + "\n")

    def profile(self, step: int, norms: Sequence) -> None:
        rows = _profile_rows(norms)
        row = {"step": int(step), "grad_norms": rows[0] if len(rows) == 1 and _is_flat(norms) else rows}
        self._file("profile").write(json.dumps(row) + "\n")

    def flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}


class TensorBoardWriter:
    """TensorBoard event files in ``directory`` (``tensorboard --logdir`` on it or a parent).

    Args:
      directory: where the event files go (created).
      purge_step: on resume, the checkpoint's step: TensorBoard then discards
        the events an interrupted run wrote after it (``SessionLog.START``).

    Raises:
      ImportError: ``tensorboardX`` is not installed (``pip install "rnnjax[tensorboard]"``).
    """

    def __init__(self, directory: str | os.PathLike, *, purge_step: int | None = None):
        from tensorboardX import SummaryWriter

        self.directory = os.fspath(directory)
        self._writer = SummaryWriter(logdir=self.directory, purge_step=purge_step, flush_secs=30)

    def scalars(self, step: int, values: dict, *, group: str = "train") -> None:
        _check_group(group)
        for name, value in values.items():
            value = _finite_or_none(value)
            if value is not None and name != "wall_time_s":
                self._writer.add_scalar(f"{group}/{name}", float(value), int(step))

    def profile(self, step: int, norms: Sequence[float]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = _profile_rows(norms)
        names = [""] if len(rows) == 1 else ["forward", "backward"] if len(rows) == 2 else [str(i) for i in
                                                                                                range(len(rows))]
        fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
        for name, values in zip(names, rows):
            suffix = f"/{name}" if name else ""
            if values and values[0] is not None:
                self._writer.add_scalar(f"gradflow/first_step_norm{suffix}", values[0], int(step))
            if values and values[-1] is not None:
                self._writer.add_scalar(f"gradflow/last_step_norm{suffix}", values[-1], int(step))
            finite = [(t, x) for t, x in enumerate(values) if x is not None and x > 0]
            if finite:
                ax.semilogy(*zip(*finite), label=name or None)
        if len(rows) > 1:
            ax.legend(fontsize=7)
        ax.set_xlabel("time step t")
        ax.set_ylabel("||dL/dh_t||")
        ax.set_title(f"gradient-norm profile, training step {int(step)}", fontsize=9)
        fig.tight_layout()
        self._writer.add_figure("gradflow/profile", fig, int(step), close=True)
        plt.close(fig)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiWriter:
    """Sends every record to each of ``writers``."""

    def __init__(self, writers: Sequence[Any]):
        self.writers = list(writers)

    def scalars(self, step: int, values: dict, *, group: str = "train") -> None:
        for w in self.writers:
            w.scalars(step, values, group=group)

    def profile(self, step: int, norms: Sequence[float]) -> None:
        for w in self.writers:
            w.profile(step, norms)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()


def tensorboard_available() -> bool:
    """Whether the optional ``tensorboardX`` writer library is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboardX") is not None


def open_writers(directory: str | os.PathLike, *, tensorboard: bool = False,
                 purge_step: int | None = None) -> MultiWriter:
    """The writers of a run directory: JSON lines, plus TensorBoard in ``DIR/tensorboard`` if asked."""
    writers: list[Any] = [JsonlWriter(directory)]
    if tensorboard:
        writers.append(TensorBoardWriter(os.path.join(os.fspath(directory), TENSORBOARD_DIR), purge_step=purge_step))
    return MultiWriter(writers)


__all__ = ["GROUPS", "JSONL_FILES", "JsonlWriter", "MetricsWriter", "MultiWriter", "TENSORBOARD_DIR",
           "TensorBoardWriter", "open_writers", "tensorboard_available"]
