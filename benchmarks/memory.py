"""Peak memory of an rnnjax training step against sequence length T, with and without remat.

Measured from XLA's buffer assignment of the compiled step
(``jax.jit(step).lower(...).compile().memory_analysis()``): the peak is
``temp_size_in_bytes + argument_size_in_bytes + output_size_in_bytes`` — every
byte XLA allocates for the step (stacked residuals, gradient buffers,
parameters, inputs, outputs), deterministic and independent of other processes
(process RSS is not used: it mixes in the allocator's caching and the Python
heap). Nothing is executed, so T = 10000 costs only a compile.

Variants: ``backward="fast"`` (default), ``backward="autodiff"``,
``remat=True`` (``jax.checkpoint`` on each step) and ``remat=k`` with
``k = round(sqrt(T))`` (checkpointed segments of k steps: only the carry at each
segment start is stored); both remat variants differentiate by plain autodiff.

Usage::

    python benchmarks/memory.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    cell: str = "lstm"
    batch: int = 32
    input_size: int = 32
    hidden: int = 128
    times: tuple = (100, 1000, 10000)
    quick_times: tuple = (100, 10000)


def _variants(time: int) -> dict:
    """name -> ``unroll`` options; the segment length of ``remat-sqrt`` depends on T."""
    return {"fast": dict(backward="fast"), "autodiff": dict(backward="autodiff"), "remat": dict(remat=True),
            "remat-sqrt": dict(remat=max(1, round(time**0.5)))}


def _peak_bytes(config, time, options):
    import jax
    import jax.numpy as jnp

    import rnnjax

    cell = rnnjax.make_cell(config.cell, config.input_size, config.hidden)
    params = cell.init(jax.random.key(0))
    xs = jax.ShapeDtypeStruct((config.batch, time, config.input_size), jnp.float32)

    def loss(params, xs):
        _, ys = jax.vmap(lambda x: rnnjax.unroll(cell, params, x, **options))(xs)
        return jnp.mean(ys**2)

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, xs).compile()
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return {
        "temp_bytes": stats.temp_size_in_bytes,
        "argument_bytes": stats.argument_size_in_bytes,
        "output_bytes": stats.output_size_in_bytes,
        "peak_bytes": stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes,
    }


def run(config: Config, quick: bool, out: str | None, settings: dict, command: list[str]) -> dict:
    times = config.quick_times if quick else config.times
    results, rows = [], []
    for time in times:
        peaks = {}
        variants = _variants(time)
        for name, options in variants.items():
            stats = _peak_bytes(config, time, options)
            peaks[name] = None if stats is None else stats["peak_bytes"]
            results.append({"time": time, "variant": name, "options": options, **(stats or {})})
        ratios = [peaks[r] / peaks[k] if peaks[k] and peaks[r] else None
                  for r in ("remat", "remat-sqrt") for k in ("fast", "autodiff")]
        rows.append([time, variants["remat-sqrt"]["remat"], *(None if p is None else p / 2**20 for p in peaks.values()),
                     *ratios])
        print(f"T={time}: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in peaks.items() if v), flush=True)
    header = ["T", "k", "fast MiB", "autodiff MiB", "remat (per step) MiB", "remat=k MiB", "per step / fast",
              "per step / autodiff", "remat=k / fast", "remat=k / autodiff"]
    markdown = (
        f"# Peak memory of a training step ({config.cell}, B={config.batch}, I={config.input_size}, "
        f"H={config.hidden}, float32), XLA buffer assignment\n\n"
        + common.markdown_table(header, rows)
        + "\nPeak = temp + arguments + outputs of the compiled step (`compiled.memory_analysis()`). "
        "`remat=True` checkpoints every step; `remat=k` (k = round(sqrt(T))) checkpoints segments of k steps.\n"
        + common.provenance(settings, command)
    )
    payload = {"benchmark": "memory", "quick": quick, "config": dataclasses.asdict(config), "settings": settings,
               "system": common.system_info(), "method": "XLA memory_analysis: temp + argument + output bytes",
               "results": results}
    common.write_results(out, "memory", payload, markdown)
    return payload


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 100 and 10000 only")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    settings = common.apply_settings(allocator="default")
    run(Config(), args.quick, args.out, settings, ["python", "benchmarks/memory.py", *(argv or sys.argv[1:])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
