"""Where a training step's time goes: XLA:CPU thunks of the compiled step, from a perfetto trace.

The step is what a user writes (``jax.value_and_grad`` of ``jax.vmap(rnnjax.unroll)``, loss
``mean(ys ** 2)``, float32). It is compiled, warmed up, then run ``--steps`` times under
``jax.profiler.trace(..., create_perfetto_trace=True)``; the trace's complete events are summed by name and
divided by the number of steps. XLA:CPU only emits one event per thunk (each fusion, matmul, loop) when
``--xla_cpu_enable_xprof_traceme=true`` is in ``XLA_FLAGS`` before JAX starts, which this script sets for
itself: the tracing adds a little time to every thunk, so read the shares, not the milliseconds.

Usage::

    python benchmarks/profile_step.py [--cell lstm] [--shape 32,100,32,128] [--backward fast|autodiff] [--top 25]

Prints a table: milliseconds per step and calls per step for the ``--top`` heaviest events (``while.N`` are
the loops; the thunks inside a loop are also listed on their own, so the column does not add up).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile

_FLAG = "--xla_cpu_enable_xprof_traceme=true"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", help="a registry name (rnnjax.CELLS)")
    parser.add_argument("--shape", default="32,100,32,128", help="batch,time,input,hidden")
    parser.add_argument("--backward", choices=("fast", "autodiff"), default="fast")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--top", type=int, default=25, help="events listed")
    args = parser.parse_args(argv)
    try:
        batch, time, inp, hidden = (int(v) for v in args.shape.split(","))
    except ValueError:
        parser.error(f"--shape: expected four integers batch,time,input,hidden, got {args.shape!r}")
    if min(batch, time, inp, hidden, args.steps, args.top) < 1:
        parser.error("--shape, --steps, --top: expected positive integers")
    if _FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()

    import jax
    import jax.numpy as jnp

    import rnnjax

    if args.cell not in rnnjax.CELLS:
        parser.error(f"--cell: expected one of {sorted(rnnjax.CELLS)}, got {args.cell!r}")
    cell = rnnjax.make_cell(args.cell, inp, hidden)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (batch, time, inp), jnp.float32)

    def loss(params, xs):
        _, ys = jax.vmap(lambda x: rnnjax.unroll(cell, params, x, backward=args.backward))(xs)
        return jnp.mean(ys**2)

    step = jax.jit(jax.value_and_grad(loss)).lower(params, xs).compile()
    for _ in range(3):
        jax.block_until_ready(step(params, xs))
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(args.steps):
                jax.block_until_ready(step(params, xs))
        (path,) = glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True)
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total, calls = collections.Counter(), collections.Counter()
    for event in events:
        name = event.get("name", "")
        # Only XLA's thunks and loops: Python frames ("$file:line") and the runtime's own wrappers are left out.
        if event.get("ph") != "X" or name.startswith("$") or "Execute" in name or "Pjit" in name:
            continue
        total[name] += event["dur"]
        calls[name] += 1
    print(f"# {args.cell} (B,T,I,H) = ({batch},{time},{inp},{hidden}), backward={args.backward}, "
          f"{args.steps} profiled steps, {jax.default_backend()}\n")
    print("| event | ms per step | calls per step |\n|---|---:|---:|")
    for name, us in total.most_common(args.top):
        print(f"| `{name[:80]}` | {us / args.steps / 1e3:.3f} | {calls[name] / args.steps:g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
