"""Wall time of sequential scan vs associative scan vs DEER over sequence length.

For each cell, method and length T: compile first (``jit(f).lower(...).compile()``),
warm up once, then time ``repeats`` runs with ``block_until_ready`` and report
the median and the spread (min, max). DEER also reports its Newton iterations
and final residual. Writes ``parallel_scan.json`` and ``parallel_scan.md`` to
``--out`` (default ``benchmarks/results``).

    python benchmarks/parallel_scan.py                      # the committed table (CPU)
    python benchmarks/parallel_scan.py --lengths 100 1000 --repeats 3 --out /tmp/ps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax


@dataclasses.dataclass(frozen=True)
class Config:
    lengths: tuple[int, ...] = (100, 1000, 4096, 16384)
    # (cell name, hidden size, methods); DEER's Jacobians are (T, N, N), so nonlinear cells use a small N.
    cells: tuple[str, ...] = ("mingru", "lru", "gru")
    hidden_linear: int = 64
    hidden_nonlinear: int = 16
    input_size: int = 4
    batch: int = 1
    repeats: int = 7
    dtype: str = "float32"
    seed: int = 0
    out: str = "benchmarks/results"


METHODS = {
    "mingru": ("scan", "associative", "deer-quasi"),  # diag(J) is exact for minGRU: one Newton step
    "lru": ("scan", "associative"),
    "gru": ("scan", "deer", "deer-quasi"),
    "elman-tanh": ("scan", "deer", "deer-quasi"),
}


def _runner(cell, method, batch):
    options = {}
    if method.startswith("deer"):
        options = dict(quasi=method == "deer-quasi", return_info=True, max_iter=200, on_failure="nan")
        base = "deer"
    else:
        base = method

    def run(params, xs):
        out = jax.vmap(lambda x: rnnjax.unroll(cell, params, x, method=base, **options))(xs)
        ys = out[1]
        info = out[2] if base == "deer" else None
        return ys, info

    return run


def bench_one(cell, hidden, method, time_steps, config, key, reference=None):
    k_p, k_x = jax.random.split(key)
    dtype = jnp.dtype(config.dtype)
    params = cell.init(k_p)
    xs = jax.random.normal(k_x, (config.batch, time_steps, cell.input_size), dtype)
    compiled = jax.jit(_runner(cell, method, config.batch)).lower(params, xs).compile()
    ys, info = compiled(params, xs)  # warm-up
    jax.block_until_ready(ys)
    times = []
    for _ in range(config.repeats):
        t0 = time.perf_counter()
        ys, info = compiled(params, xs)
        jax.block_until_ready(ys)
        times.append(time.perf_counter() - t0)
    row = dict(
        cell=cell.name,
        hidden=hidden,
        method=method,
        T=time_steps,
        median_ms=1e3 * statistics.median(times),
        min_ms=1e3 * min(times),
        max_ms=1e3 * max(times),
        finite=bool(jnp.all(jnp.isfinite(ys))),
        max_abs_err_vs_scan=None if reference is None else float(jnp.max(jnp.abs(ys - reference))),
    )
    if info is not None:
        row.update(iterations=int(jnp.max(info.iterations)), residual=float(jnp.max(info.residual)),
                   converged=bool(jnp.all(info.converged)))
    return row, ys


def _markdown(rows, meta):
    lines = [
        "# Sequential scan vs associative scan vs DEER",
        "",
        f"Device: {meta['device']}; dtype {meta['dtype']}; batch {meta['batch']}; median of {meta['repeats']} runs "
        f"after compile and warm-up (spread = min..max). jax {meta['jax']}, jaxlib {meta['jaxlib']}, "
        f"Python {meta['python']}; load average at start {meta['loadavg']}.",
        "",
        "| cell | H | method | T | median ms | min..max ms | time / scan | max abs diff to scan | DEER iters | DEER residual |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    scan = {(r["cell"], r["T"]): r["median_ms"] for r in rows if r["method"] == "scan"}
    for r in rows:
        ratio = scan.get((r["cell"], r["T"]))
        ratio = f"{r['median_ms'] / ratio:.2f}x" if ratio else ""
        iters = str(r.get("iterations", "")) + ("" if r.get("converged", True) else " (not converged)")
        res = f"{r['residual']:.1e}" if "residual" in r else ""
        err = "" if r["max_abs_err_vs_scan"] is None else f"{r['max_abs_err_vs_scan']:.1e}"
        lines.append(
            f"| {r['cell']} | {r['hidden']} | {r['method']} | {r['T']} | {r['median_ms']:.2f} | "
            f"{r['min_ms']:.2f}..{r['max_ms']:.2f} | {ratio} | {err} | {iters} | {res} |"
        )
    lines.append("")
    lines.append(f"Reproduce: `{meta['command']}`")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Config()
    parser.add_argument("--lengths", type=int, nargs="+", default=list(defaults.lengths))
    parser.add_argument("--cells", nargs="+", default=list(defaults.cells), choices=sorted(METHODS))
    parser.add_argument("--hidden-linear", type=int, default=defaults.hidden_linear)
    parser.add_argument("--hidden-nonlinear", type=int, default=defaults.hidden_nonlinear)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--dtype", default=defaults.dtype, choices=["float32", "float64"])
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", default=defaults.out)
    args = parser.parse_args(argv)
    config = Config(
        lengths=tuple(args.lengths), cells=tuple(args.cells), hidden_linear=args.hidden_linear,
        hidden_nonlinear=args.hidden_nonlinear, batch=args.batch, repeats=args.repeats, dtype=args.dtype,
        seed=args.seed, out=args.out,
    )
    if config.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(config.dtype)
    import jaxlib

    meta = dict(
        device=f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind} ({os.cpu_count()} CPU cores visible)",
        dtype=config.dtype, batch=config.batch, repeats=config.repeats, jax=jax.__version__,
        jaxlib=jaxlib.__version__, python=platform.python_version(),
        loadavg=" ".join(f"{x:.1f}" for x in os.getloadavg()),
        command="python benchmarks/parallel_scan.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    )
    rows = []
    key = jax.random.key(config.seed)
    for name in config.cells:
        hidden = config.hidden_nonlinear if name in ("gru", "elman-tanh") else config.hidden_linear
        cell = rnnjax.make_cell(name, config.input_size, hidden, dtype=dtype)
        for t in config.lengths:
            reference = None
            for method in METHODS[name]:
                row, ys = bench_one(cell, hidden, method, t, config, key, reference)
                if method == "scan":
                    reference = ys
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "parallel_scan.json").write_text(json.dumps(dict(config=dataclasses.asdict(config), meta=meta, rows=rows), indent=1))
    (out / "parallel_scan.md").write_text(_markdown(rows, meta))
    print(_markdown(rows, meta))


if __name__ == "__main__":
    main()
