"""Timing, environment and result-writing utilities shared by the benchmark scripts.

Rules every benchmark here follows (STYLE.md section 9):

- compile first (``jax.jit(f).lower(...).compile()``), warm up, then time
  each call to ``block_until_ready`` (PyTorch: the call returns when done on CPU;
  ``torch.cuda.synchronize()`` on GPU);
- implementations that are compared are timed **interleaved** in one process
  (round-robin, one call each per round), so machine load hits all of them
  alike; each row reports the median and the spread (25th-75th percentile)
  of wall time, and the median CPU time of the process (``time.process_time``:
  user + system time of all threads, robust to other processes on a shared
  machine, and it counts page-fault time);
- the device, dtype, library versions, CPU count, load average and the
  environment settings in force are written next to every result.

Environment settings (allocator, host devices) are applied the same way to
every implementation of a run: ``apply_settings`` runs before JAX or PyTorch
computes anything, in the same process, and the settings go into the results.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import numpy as np

from rnnjax.allocator import tune_allocator


def apply_settings(*, allocator: str = "tuned", host_devices: int | None = None) -> dict:
    """Apply the run's environment settings before any computation; return them for the record.

    Args:
      allocator: ``"tuned"`` (``tune_allocator``) or ``"default"`` (leave glibc alone).
      host_devices: number of CPU host devices to ask JAX for (one thread
        each; data-parallel steps use them); None leaves JAX's default.
        Must run before JAX initialises its backend.

    Returns:
      A dict of what is in force (also the relevant environment variables).
    """
    settings: dict = {}
    if allocator == "tuned":
        settings.update(tune_allocator())
    elif allocator == "default":
        settings["allocator"] = "default"
    else:
        raise ValueError(f"allocator: expected 'tuned' or 'default', got {allocator!r}")
    if host_devices is not None:
        from rnnjax import distributed

        distributed.request_host_devices(host_devices)
    import jax

    settings["jax_devices"] = [str(d) for d in jax.devices()]
    settings["env"] = {k: os.environ.get(k) for k in ("XLA_FLAGS", "GLIBC_TUNABLES", "OMP_NUM_THREADS") if k in os.environ}
    return settings


def system_info() -> dict:
    """Device, library versions, CPU count and load: recorded with every result."""
    import jax

    info = {
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
    }
    for name in ("flax", "torch", "jaxlib"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = None
    return info


def time_interleaved(
    fns: dict[str, Callable[[], object]], *, repeats: int = 15, warmup: int = 2, budget_s: float = 20.0
) -> dict:
    """Time zero-argument callables round-robin; each must block until its result is ready.

    The order rotates every round, so each implementation follows each other
    one equally often (threads of the previous one, e.g. OpenMP's spinning
    workers, cannot favour or penalise a fixed neighbour).

    Args:
      fns: name -> callable (already compiled; one call = one training step).
      repeats: timed rounds.
      warmup: untimed rounds first.
      budget_s: an implementation whose timed calls have taken this long in
        total drops out of later rounds once it has 3 samples (its ``n`` says
        how many it got), so one pathological row cannot stall a run.

    Returns:
      name -> ``{"median_ms", "p25_ms", "p75_ms", "min_ms", "cpu_median_ms", "n"}``.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = fns[name]
            if len(wall[name]) >= 3 and sum(wall[name]) > 1e3 * budget_s:
                continue
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[name].append(1e3 * (time.perf_counter() - t0))
            cpu[name].append(1e3 * (time.process_time() - c0))
    return {
        name: {
            "median_ms": statistics.median(wall[name]),
            "p25_ms": float(np.percentile(wall[name], 25)),
            "p75_ms": float(np.percentile(wall[name], 75)),
            "min_ms": min(wall[name]),
            "cpu_median_ms": statistics.median(cpu[name]),
            "n": len(wall[name]),
        }
        for name in fns
    }


def compile_seconds(fn: Callable, *args) -> tuple[Callable, float, float]:
    """``jax.jit(fn).lower(*args).compile()``, timed: returns ``(compiled, lower_s, compile_s)``."""
    import jax

    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, t1 - t0, time.perf_counter() - t1


def out_dir(path: str | None) -> str:
    """``path`` or ``benchmarks/results`` next to this file; created."""
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(path, exist_ok=True)
    return path


def write_results(directory: str, name: str, payload: dict, markdown: str) -> tuple[str, str]:
    """Write ``name.json`` and ``name.md`` into ``directory``; return both paths."""
    directory = out_dir(directory)
    json_path = os.path.join(directory, f"{name}.json")
    md_path = os.path.join(directory, f"{name}.md")
    with open(json_path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    with open(md_path, "w") as f:
        f.write(markdown)
    return json_path, md_path


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; numbers are formatted compactly."""

    def fmt(x):
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
        return "" if x is None else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def provenance(settings: dict, command: list[str] | None = None) -> str:
    """A markdown footer naming the machine, versions, settings and the command that reproduces the table."""
    info = system_info()
    cmd = " ".join(command or sys.argv)
    return (
        f"\nMeasured {info['time_utc']} UTC on {info['device_kind']} ({info['backend']}, "
        f"{info['cpu_count']} cores, load average {info['loadavg']}); jax {info['jax']}, "
        f"flax {info['flax']}, torch {info['torch']}; allocator {settings.get('allocator')}; "
        f"devices {len(settings.get('jax_devices', []))}.\n\nReproduce: `{cmd}`\n"
    )
