"""What ``rnnjax.train.compiler_options()`` costs a training run on CPU.

Only the vectorised sweep (``rnnjax sweep --vectorize``, ``run_sweep(method="vmap")``)
compiles with ``compiler_options()`` (no YNNPACK reductions, XLA:CPU's classic
emitters), so that its rows are bit for bit batch-invariant single runs;
``rnnjax train`` and the default sweep use XLA's defaults and pay nothing
(``benchmarks/train_overhead.py``). This script times the
same ``Trainer.run`` chunk (100 steps of the adding task, the defaults of
``rnnjax train`` except the cell) compiled with XLA's defaults and with those
options, interleaved in one process, and reports ms per step and the ratio.

Usage::

    python benchmarks/batch_invariance_cost.py [--cells lstm,elman-tanh] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

CHUNK = 100  # steps per timed call (rnnjax train runs its scan in chunks of 100)


def run(cells: list[str], hidden: int, out: str | None, settings: dict, command: list[str]) -> dict:
    import jax

    from rnnjax.train import RunConfig, build, compiler_options, run_key

    fns, labels = {}, {}
    for cell in cells:
        trainer = build(RunConfig(task="adding", cell=cell, hidden=hidden))
        state = jax.jit(trainer.init)(run_key(0))
        for variant, options in (("xla defaults", {}), ("compiler_options()", compiler_options())):
            compiled = jax.jit(trainer.run, static_argnums=1).lower(state, CHUNK).compile(compiler_options=options)
            name = f"{cell} / {variant}"
            fns[name] = lambda c=compiled, s=state: jax.block_until_ready(c(s))
            labels[name] = (cell, variant)
    timings = common.time_interleaved(fns, repeats=9)
    rows, results = [], []
    for cell in cells:
        base = timings[f"{cell} / xla defaults"]["median_ms"]
        for variant in ("xla defaults", "compiler_options()"):
            t = timings[f"{cell} / {variant}"]
            rows.append([cell, variant, t["median_ms"] / CHUNK, t["cpu_median_ms"] / CHUNK, t["median_ms"] / base])
            results.append({"cell": cell, "variant": variant, **t})
            print(f"{cell:12s} {variant:20s} {t['median_ms'] / CHUNK:7.3f} ms/step  x{t['median_ms'] / base:.2f}",
                  flush=True)
    markdown = (
        f"# Cost of `rnnjax.train.compiler_options()` (adding task, H={hidden}, B=64, T=50, float32)\n\n"
        + common.markdown_table(["cell", "compiled with", "ms / step", "CPU ms / step", "/ xla defaults"], rows)
        + common.provenance(settings, command)
    )
    payload = {"benchmark": "batch_invariance_cost", "settings": settings, "system": common.system_info(),
               "chunk_steps": CHUNK, "hidden": hidden, "results": results}
    common.write_results(out, "batch_invariance_cost", payload, markdown)
    return payload


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,elman-tanh", help="comma-separated cells (default lstm,elman-tanh)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size (default 64, rnnjax train's)")
    parser.add_argument("--out", default=None, help="output directory (default benchmarks/results)")
    args = parser.parse_args(argv)
    cells = [c for c in args.cells.split(",") if c]
    if not cells:
        parser.error("--cells: expected at least one cell name")
    settings = common.apply_settings(allocator="tuned")
    run(cells, args.hidden, args.out, settings,
        ["python", "benchmarks/batch_invariance_cost.py", *(argv if argv is not None else sys.argv[1:])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
