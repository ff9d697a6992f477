"""What ``rnnjax train`` costs per step over the plain library path (target: at most 1.05x).

Side by side in one process, for each cell (adding task, H=64, B=64, T=50,
float32, the defaults of ``rnnjax train`` otherwise):

- **library path**: what a user writes — the same model and optax optimizer
  (``rnnjax.train.build(...)``'s ``model`` and ``optimizer``), one
  ``jax.jit``-ed step ``value_and_grad(model.loss)`` + ``optimizer.update``
  with XLA's defaults, called in a Python loop on ``task.sample(fold_in(key, s))``;
- **rnnjax train**: the command itself, in-process (``rnnjax.cli.main``),
  with its logging of every step, periodic checkpoints, the non-finite guard.

The command's fixed costs (start-up, compilation, final evaluation and
checkpoint) are removed by timing it at N and 2N steps and taking the
difference: the per-step figure is ``(t(2N) - t(N)) / N``. The library path
is timed over N steps after compilation. Rounds alternate the two so that
machine load hits both alike; the table reports medians over rounds.

Usage::

    python benchmarks/train_overhead.py [--cells lstm,elman-tanh] [--steps 300] [--rounds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

ARGS = ["--task", "adding", "--seq-len", "50", "--hidden", "64", "--batch-size", "64", "--seed", "0"]


def _library_path(cell: str):
    """A function ``n -> seconds for n steps`` of the plain jitted step (compiled before it is returned)."""
    import jax
    import optax

    from rnnjax.train import RunConfig, build

    trainer = build(RunConfig(task="adding", cell=cell, seq_len=50, hidden=64, batch_size=64))
    model, task, opt, batch_size = trainer.model, trainer.task, trainer.optimizer, trainer.batch_size

    @jax.jit
    def step(params, opt_state, key):
        batch = task.sample(key, batch_size)
        (loss, _), grads = jax.value_and_grad(model.loss, has_aux=True)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    k_param, k_data = jax.random.split(jax.random.key(0))
    params = model.init(k_param)
    opt_state = opt.init(params)
    jax.block_until_ready(step(params, opt_state, k_data))  # compile

    def timed(n: int) -> float:
        p, o = params, opt_state
        t0 = time.perf_counter()
        for s in range(n):
            p, o, loss = step(p, o, jax.random.fold_in(k_data, s))
        jax.block_until_ready(loss)
        return time.perf_counter() - t0

    return timed


def _command(cell: str, work: str):
    """A function ``n -> seconds`` of ``rnnjax train`` with ``n`` steps, in-process, output discarded."""
    from rnnjax.cli import main

    counter = iter(range(10**6))

    def timed(n: int) -> float:
        out = os.path.join(work, f"{cell}-{next(counter)}")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = main(["train", *ARGS, "--cell", cell, "--steps", str(n), "--out", out])
        elapsed = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"rnnjax train failed with exit code {rc}")
        return elapsed

    return timed


def run(cells: list[str], steps: int, rounds: int, out: str | None, settings: dict, command: list[str]) -> dict:
    import jax

    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="train_overhead_cache_"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    rows, results = [], []
    with tempfile.TemporaryDirectory() as work:
        for cell in cells:
            library, cli = _library_path(cell), _command(cell, work)
            cli(steps), cli(2 * steps)  # warm: the compilation cache now holds the command's programs
            lib_ms, cli_ms = [], []
            for _ in range(rounds):
                lib_ms.append(1e3 * library(steps) / steps)
                short, long = cli(steps), cli(2 * steps)
                cli_ms.append(1e3 * (long - short) / steps)
            ratio = statistics.median(c / lib for c, lib in zip(cli_ms, lib_ms))
            lib, cmd = statistics.median(lib_ms), statistics.median(cli_ms)
            rows.append([cell, f"{lib:.3f}", f"{cmd:.3f}", f"{ratio:.3f}"])
            results.append({"cell": cell, "library_ms_per_step": lib_ms, "train_ms_per_step": cli_ms,
                            "median_ratio": ratio})
            print(f"{cell:12s} library {lib:7.3f} ms/step   rnnjax train {cmd:7.3f} ms/step   x{ratio:.3f}", flush=True)
    markdown = (
        f"# `rnnjax train` per step over the plain library path (adding, H=64, B=64, T=50, float32, "
        f"{steps}/{2 * steps} steps, {rounds} rounds)\n\n"
        + common.markdown_table(["cell", "library ms / step", "rnnjax train ms / step", "train / library "
                                 "(median of rounds)"], rows)
        + common.provenance(settings, command)
    )
    payload = {"benchmark": "train_overhead", "settings": settings, "system": common.system_info(), "steps": steps,
               "rounds": rounds, "results": results}
    common.write_results(out, "train_overhead", payload, markdown)
    return payload


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,elman-tanh", help="comma-separated cells (default lstm,elman-tanh)")
    parser.add_argument("--steps", type=int, default=300, help="N: the command is timed at N and 2N steps")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--out", default=None, help="output directory (default benchmarks/results)")
    args = parser.parse_args(argv)
    cells = [c for c in args.cells.split(",") if c]
    if not cells or args.steps < 1 or args.rounds < 1:
        parser.error("--cells, --steps, --rounds: expected at least one cell and positive counts")
    settings = common.apply_settings(allocator="tuned")
    run(cells, args.steps, args.rounds, args.out, settings,
        ["python", "benchmarks/train_overhead.py", *(argv if argv is not None else sys.argv[1:])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
