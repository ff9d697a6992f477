"""Process-level allocator tuning: keep large freed buffers instead of page-faulting them back every step.

Process plumbing, not part of the modelling API: a program that owns its
process (the ``rnnjax`` command line, the benchmarks) calls
``rnnjax.allocator.tune_allocator()`` once at start-up, or exports
``GLIBC_TUNABLES`` before the process starts.
"""

from __future__ import annotations

import ctypes

__all__ = ["ALLOCATOR_TUNED", "GLIBC_TUNABLES", "tune_allocator"]

# mallopt(3) parameter numbers (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ALLOCATOR_TUNED = {"arena_max": 1, "mmap_threshold": 1 << 30, "trim_threshold": (1 << 31) - 1}
# The same as an environment variable, for processes that cannot call ``tune_allocator``.
GLIBC_TUNABLES = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=2147483647"
)


def tune_allocator() -> dict:
    """Keep freed large buffers in the process instead of returning them to the OS (glibc only).

    XLA and PyTorch allocate the big per-step buffers (stacked activations,
    gradient stacks) afresh at every step; glibc serves blocks above its mmap
    threshold with ``mmap`` and unmaps them on ``free``, so every step pays a
    page fault per 4 KiB page touched. ``mallopt`` raises the mmap and trim
    thresholds at run time (the same effect as ``GLIBC_TUNABLES`` set before
    the process starts).

    Returns:
      ``{"allocator": "tuned", ...settings}``, or ``{"allocator": "default",
      "reason": ...}`` where there is no glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = all(
            libc.mallopt(param, value) == 1
            for param, value in (
                (_M_ARENA_MAX, ALLOCATOR_TUNED["arena_max"]),
                (_M_MMAP_THRESHOLD, ALLOCATOR_TUNED["mmap_threshold"]),
                (_M_TRIM_THRESHOLD, ALLOCATOR_TUNED["trim_threshold"]),
            )
        )
    except (OSError, AttributeError) as err:
        return {"allocator": "default", "reason": f"no glibc mallopt ({err})"}
    if not ok:
        return {"allocator": "default", "reason": "mallopt rejected a setting"}
    return {"allocator": "tuned", **ALLOCATOR_TUNED}
