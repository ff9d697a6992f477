"""Benchmark: a vmapped sweep of 12 small training runs against the same 12 runs one after another.

Three comparisons (all wall-clock, float32 params, the adding task):

1. end to end, in one process: 12 x what ``rnnjax train`` does (build the run, jit init, compile and
   run the training scan, evaluate) against ``rnnjax.sweep.run_sweep`` on the same 12 configurations
   (init, one compile, train, evaluate);
2. execution only: the single-run training program compiled ONCE and called 12 times (the best a
   sequential loop can do) against one call of the compiled sweep program;
   both also for the ``--exact`` sweep (``method="map"``: the runs one after another inside one program);
3. optionally (``--cli``), 12 ``rnnjax train`` processes against one ``rnnjax sweep`` process.

Every measurement is repeated ``--repeats`` times (after an untimed warm-up) and reported as median
and min-max. Writes ``sweep_vs_sequential.json`` and ``.md`` to ``--out`` (default
``benchmarks/results``).

    python benchmarks/sweep_vs_sequential.py            # ~5 min on 2 idle CPU cores, 20+ min on a busy machine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time


@dataclasses.dataclass(frozen=True)
class Config:
    task: str = "adding"
    cell: str = "lstm"
    hidden: int = 32
    seq_len: int = 50
    batch_size: int = 32
    steps: int = 300
    lr: float = 3e-3
    init_gains: tuple = (0.5, 1.0, 1.5)
    seeds: tuple = (0, 1, 2, 3)
    eval_size: int = 256
    repeats: int = 3
    cli: bool = False


def parse() -> tuple[Config, str]:
    cfg = Config()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Config):
        if f.type == "bool":
            p.add_argument(f"--{f.name.replace('_', '-')}", action="store_true")
        elif f.type == "tuple":
            p.add_argument(f"--{f.name.replace('_', '-')}", default=",".join(map(str, getattr(cfg, f.name))))
        else:
            value = getattr(cfg, f.name)
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    a = vars(p.parse_args())
    out = a.pop("out")
    a["init_gains"] = tuple(float(x) for x in str(a["init_gains"]).split(","))
    a["seeds"] = tuple(int(x) for x in str(a["seeds"]).split(","))
    return Config(**a), out


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def _stats(xs):
    return {"median_s": round(_median(xs), 4), "min_s": round(min(xs), 4), "max_s": round(max(xs), 4),
            "all_s": [round(x, 4) for x in xs]}


def main() -> None:
    cfg, out_dir = parse()
    import jax
    import numpy as np

    import rnnjax
    from rnnjax import sweep
    from rnnjax.train import RunConfig, build, compiler_options, run_key

    options = compiler_options()  # what `rnnjax train` and `rnnjax sweep` compile with

    base = RunConfig(task=cfg.task, cell=cfg.cell, hidden=cfg.hidden, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                     steps=cfg.steps, lr=cfg.lr, clip=1.0, task_options=(("eval_size", cfg.eval_size),))
    configs = sweep.grid(base, init_gains=cfg.init_gains, seeds=cfg.seeds)
    n = len(configs)
    print(f"{n} runs: {cfg.cell} H={cfg.hidden} T={cfg.seq_len} B={cfg.batch_size}, {cfg.steps} steps each", flush=True)

    def sequential_end_to_end():
        losses = []
        for c in configs:  # what `rnnjax train` does per run (minus process start-up and file output)
            trainer = build(c)
            state = jax.jit(trainer.init)(run_key(c.seed))
            state, _ = jax.jit(trainer.run, static_argnums=1, compiler_options=options)(state, c.steps)
            losses.append(float(jax.jit(trainer.evaluate, compiler_options=options)(state.params)["loss"]))
        return losses

    def sweep_end_to_end(method="vmap"):
        result = sweep.run_sweep(configs, method=method)
        return [r["eval_loss"] for r in result.rows], result.timing

    # ---- 1. end to end (an untimed warm-up sweep first fills JAX's per-operation caches)
    sweep_end_to_end()
    seq_times, sw_times, sw_timing, map_times = [], [], [], []
    for r in range(cfg.repeats):
        t = time.perf_counter()
        seq_losses = sequential_end_to_end()
        seq_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        sw_losses, timing = sweep_end_to_end()
        sw_times.append(time.perf_counter() - t)
        sw_timing.append(timing)
        t = time.perf_counter()
        map_losses, _ = sweep_end_to_end("map")
        map_times.append(time.perf_counter() - t)
        print(f"repeat {r}: sequential {seq_times[-1]:.2f} s, sweep {sw_times[-1]:.2f} s, "
              f"sweep --exact {map_times[-1]:.2f} s", flush=True)
    rel = max(abs(a - b) / abs(b) for a, b in zip(sw_losses, seq_losses))
    rel_map = max(abs(a - b) / abs(b) for a, b in zip(map_losses, seq_losses))

    # ---- 2. execution only: compiled once, called 12 times vs one call of the compiled sweep
    trainer = build(configs[0])
    states = [build(c).init(run_key(c.seed), c.lr) for c in configs]
    run_one = jax.jit(trainer.run, static_argnums=1).lower(states[0], cfg.steps).compile(compiler_options=options)
    stacked = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *states)
    run_all = jax.jit(jax.vmap(lambda s: trainer.run(s, cfg.steps))).lower(stacked).compile(compiler_options=options)
    map_all = jax.jit(lambda st: jax.lax.map(lambda s: trainer.run(s, cfg.steps), st)).lower(stacked).compile(
        compiler_options=options)
    jax.block_until_ready(run_one(states[0]))
    jax.block_until_ready(run_all(stacked))
    jax.block_until_ready(map_all(stacked))
    exec_seq, exec_sw, exec_map = [], [], []
    for _ in range(max(3, cfg.repeats)):
        t = time.perf_counter()
        for s in states:
            jax.block_until_ready(run_one(s))
        exec_seq.append(time.perf_counter() - t)
        t = time.perf_counter()
        jax.block_until_ready(run_all(stacked))
        exec_sw.append(time.perf_counter() - t)
        t = time.perf_counter()
        jax.block_until_ready(map_all(stacked))
        exec_map.append(time.perf_counter() - t)

    results = {
        "config": dataclasses.asdict(cfg),
        "runs": n,
        "end_to_end": {
            "sequential": _stats(seq_times),
            "sweep": _stats(sw_times),
            "speedup_median": round(_median(seq_times) / _median(sw_times), 2),
            "sweep_phases_median_s": {k: round(_median([t[k] for t in sw_timing]), 3) for k in sw_timing[0]},
            "max_rel_diff_eval_loss": rel,
            "sweep_exact": _stats(map_times),
            "speedup_exact_median": round(_median(seq_times) / _median(map_times), 2),
            "max_rel_diff_eval_loss_exact": rel_map,
        },
        "execution_only": {
            "sequential_compiled_once": _stats(exec_seq),
            "sweep": _stats(exec_sw),
            "speedup_median": round(_median(exec_seq) / _median(exec_sw), 2),
            "sweep_exact": _stats(exec_map),
            "speedup_exact_median": round(_median(exec_seq) / _median(exec_map), 2),
        },
    }

    # ---- 3. optional: separate processes, as a user would type them
    if cfg.cli:
        flags = ["--task", cfg.task, "--cell", cfg.cell, "--hidden", str(cfg.hidden), "--seq-len", str(cfg.seq_len),
                 "--batch-size", str(cfg.batch_size), "--steps", str(cfg.steps), "--lr", repr(cfg.lr),
                 "--task-option", f"eval_size={cfg.eval_size}"]
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            for c in configs:
                cmd = [sys.executable, "-m", "rnnjax", "train", *flags, "--init-gain", repr(c.init_gain),
                       "--seed", str(c.seed), "--out", os.path.join(tmp, f"g{c.init_gain}_s{c.seed}")]
                subprocess.run(cmd, check=True, capture_output=True)
            cli_seq = time.perf_counter() - t
            t = time.perf_counter()
            cmd = [sys.executable, "-m", "rnnjax", "sweep", *flags, "--init-gain", ",".join(map(repr, cfg.init_gains)),
                   "--seeds", ",".join(map(str, cfg.seeds)), "--out", os.path.join(tmp, "sweep")]
            subprocess.run(cmd, check=True, capture_output=True)
            cli_sw = time.perf_counter() - t
        results["cli_processes"] = {"sequential_s": round(cli_seq, 2), "sweep_s": round(cli_sw, 2),
                                    "speedup": round(cli_seq / cli_sw, 2), "sweep_command": shlex.join(cmd[1:])}

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    results["environment"] = {
        "device": str(jax.devices()[0]), "platform": jax.devices()[0].platform, "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(), "load_average_at_end": load, "dtype": "float32",
        "jax": jax.__version__, "rnnjax": rnnjax.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "sweep_vs_sequential.json"), "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    e, x = results["end_to_end"], results["execution_only"]
    lines = [
        "# Sweep of 12 runs vs the same runs one after another",
        "",
        f"{n} runs ({cfg.cell}, H={cfg.hidden}, T={cfg.seq_len}, B={cfg.batch_size}, {cfg.steps} steps, "
        f"init gains {list(cfg.init_gains)} x seeds {list(cfg.seeds)}), {results['environment']['device']}, "
        f"{os.cpu_count()} cores, load average {None if load is None else round(load[0], 1)}; "
        f"median (min-max) of {cfg.repeats} repeats.",
        "",
        "| comparison | sequential (s) | sweep (s) | speedup |",
        "|---|---:|---:|---:|",
        f"| end to end in one process (build, compile, train, eval) | {e['sequential']['median_s']:.2f} "
        f"({e['sequential']['min_s']:.2f}-{e['sequential']['max_s']:.2f}) | {e['sweep']['median_s']:.2f} "
        f"({e['sweep']['min_s']:.2f}-{e['sweep']['max_s']:.2f}) | {e['speedup_median']:.1f}x |",
        f"| execution only (single-run program compiled once, called {n}x) | "
        f"{x['sequential_compiled_once']['median_s']:.3f} ({x['sequential_compiled_once']['min_s']:.3f}-"
        f"{x['sequential_compiled_once']['max_s']:.3f}) | {x['sweep']['median_s']:.3f} ({x['sweep']['min_s']:.3f}-"
        f"{x['sweep']['max_s']:.3f}) | {x['speedup_median']:.1f}x |",
        f"| end to end, `--exact` sweep (`lax.map` inside one program) | {e['sequential']['median_s']:.2f} | "
        f"{e['sweep_exact']['median_s']:.2f} ({e['sweep_exact']['min_s']:.2f}-{e['sweep_exact']['max_s']:.2f}) | "
        f"{e['speedup_exact_median']:.1f}x |",
        f"| execution only, `--exact` sweep | {x['sequential_compiled_once']['median_s']:.3f} | "
        f"{x['sweep_exact']['median_s']:.3f} ({x['sweep_exact']['min_s']:.3f}-{x['sweep_exact']['max_s']:.3f}) | "
        f"{x['speedup_exact_median']:.1f}x |",
    ]
    if "cli_processes" in results:
        c = results["cli_processes"]
        lines.append(f"| {n} `rnnjax train` processes vs one `rnnjax sweep` | {c['sequential_s']:.1f} | "
                     f"{c['sweep_s']:.1f} | {c['speedup']:.1f}x |")
    lines += ["", f"Sweep phases (median s): {e['sweep_phases_median_s']}. Largest relative difference of the "
              f"final eval losses vs sequential: vmap sweep {e['max_rel_diff_eval_loss']:.2g}, `--exact` sweep "
              f"{e['max_rel_diff_eval_loss_exact']:.2g}.", "",
              "Command: `python benchmarks/sweep_vs_sequential.py" + (" --cli" if cfg.cli else "") + "`", ""]
    with open(os.path.join(out_dir, "sweep_vs_sequential.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
