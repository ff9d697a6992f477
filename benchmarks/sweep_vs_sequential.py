"""Benchmark: a sweep of 12 small training runs against the same 12 runs one after another.

The sequential path is what ``rnnjax train`` does per run: ``build(config)``, jit the init, compile
the training scan and the evaluation with XLA's defaults. The sweep comes in its two methods:
``rnnjax.sweep.run_sweep(configs)`` (the default, ``method="map"``: the runs one after another inside
one compiled program, XLA's defaults, each row bitwise the separate run) and
``run_sweep(configs, method="vmap")`` (``rnnjax sweep --vectorize``: trainers built with
``build(config, batch_invariant=True)``, compiled with ``rnnjax.train.compiler_options()``; its rows
differ from the default single runs by float rounding).

Three comparisons (all wall-clock, float32 params, the adding task):

1. end to end, in one process: 12 x what ``rnnjax train`` does (build the run, jit init, compile and
   run the training scan, evaluate) against each sweep method on the same 12 configurations
   (init, one compile, train, evaluate), with the largest relative difference of the final
   evaluation losses from the sequential runs (0 for the default sweep);
2. execution only: the single-run training program compiled ONCE (XLA's defaults) and called 12
   times (the best a sequential loop can do) against one call of the compiled map program (XLA's
   defaults) and of the compiled vmap program (built batch-invariant, ``compiler_options()``);
3. optionally (``--cli``), 12 ``rnnjax train`` processes against one ``rnnjax sweep`` process and
   one ``rnnjax sweep --vectorize`` process.

Every measurement is repeated ``--repeats`` times (after an untimed warm-up) and reported as median
and min-max. Writes ``sweep_vs_sequential.json`` and ``.md`` to ``--out`` (default
``benchmarks/results``).

    python benchmarks/sweep_vs_sequential.py   # ~12 min on 2 lightly loaded CPU cores (load ~1.5), longer when busy
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


def _max_rel_diff(losses, reference):
    """Largest |a - b| / |b| over paired losses (inf where exactly one of them is non-finite, i.e. None)."""
    def rel(a, b):
        if a is None or b is None:
            return 0.0 if a is None and b is None else float("inf")
        return 0.0 if a == b else abs(a - b) / max(abs(b), 1e-30)

    return max(rel(a, b) for a, b in zip(losses, reference))


def _command(cfg: Config) -> str:
    """The command line that reproduces this benchmark (only the flags that differ from the defaults)."""
    flags = []
    for f in dataclasses.fields(Config):
        value, default = getattr(cfg, f.name), f.default
        if value == default:
            continue
        name = f"--{f.name.replace('_', '-')}"
        if f.type == "bool":
            flags.append(name)
        elif f.type == "tuple":
            flags += [name, ",".join(map(str, value))]
        else:
            flags += [name, str(value)]
    return shlex.join(["python", "benchmarks/sweep_vs_sequential.py", *flags])


def main() -> None:
    cfg, out_dir = parse()
    import jax
    import numpy as np

    import rnnjax
    from rnnjax import sweep
    from rnnjax.train import RunConfig, build, compiler_options, run_key

    vmap_options = compiler_options()  # what the vectorised sweep compiles with; everything else uses XLA's defaults

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
            state, _ = jax.jit(trainer.run, static_argnums=1)(state, c.steps)
            losses.append(float(jax.jit(trainer.evaluate)(state.params)["loss"]))
        return losses

    def sweep_end_to_end(method):
        result = sweep.run_sweep(configs, method=method)
        return [r["eval_loss"] for r in result.rows], result.timing

    # ---- 1. end to end (an untimed warm-up sweep first fills JAX's per-operation caches)
    sweep_end_to_end("map")
    seq_times, map_times, vmap_times, map_timing, vmap_timing = [], [], [], [], []
    for r in range(cfg.repeats):
        t = time.perf_counter()
        seq_losses = sequential_end_to_end()
        seq_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        map_losses, timing = sweep_end_to_end("map")
        map_times.append(time.perf_counter() - t)
        map_timing.append(timing)
        t = time.perf_counter()
        vmap_losses, timing = sweep_end_to_end("vmap")
        vmap_times.append(time.perf_counter() - t)
        vmap_timing.append(timing)
        print(f"repeat {r}: sequential {seq_times[-1]:.2f} s, sweep {map_times[-1]:.2f} s, "
              f"sweep --vectorize {vmap_times[-1]:.2f} s", flush=True)
    rel_map = _max_rel_diff(map_losses, seq_losses)
    rel_vmap = _max_rel_diff(vmap_losses, seq_losses)

    # ---- 2. execution only: compiled once, called 12 times vs one call of each compiled sweep program
    trainer = build(configs[0])
    trainer_vmap = build(configs[0], batch_invariant=True)  # what run_sweep(method="vmap") trains with
    states = [jax.jit(build(c).init)(run_key(c.seed), c.lr) for c in configs]
    stacked = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *states)
    run_one = jax.jit(trainer.run, static_argnums=1).lower(states[0], cfg.steps).compile()
    map_all = jax.jit(lambda st: jax.lax.map(lambda s: trainer.run(s, cfg.steps), st)).lower(stacked).compile()
    vmap_all = jax.jit(jax.vmap(lambda s: trainer_vmap.run(s, cfg.steps))).lower(stacked).compile(
        compiler_options=vmap_options)
    jax.block_until_ready(run_one(states[0]))
    jax.block_until_ready(map_all(stacked))
    jax.block_until_ready(vmap_all(stacked))
    exec_seq, exec_map, exec_vmap = [], [], []
    for _ in range(max(3, cfg.repeats)):
        t = time.perf_counter()
        for s in states:
            jax.block_until_ready(run_one(s))
        exec_seq.append(time.perf_counter() - t)
        t = time.perf_counter()
        jax.block_until_ready(map_all(stacked))
        exec_map.append(time.perf_counter() - t)
        t = time.perf_counter()
        jax.block_until_ready(vmap_all(stacked))
        exec_vmap.append(time.perf_counter() - t)

    def phases(timings):
        return {k: round(_median([t[k] for t in timings]), 3) for k in timings[0]}

    results = {
        "config": dataclasses.asdict(cfg),
        "runs": n,
        "end_to_end": {
            "sequential": _stats(seq_times),
            "sweep_map": _stats(map_times),
            "speedup_map_median": round(_median(seq_times) / _median(map_times), 2),
            "sweep_map_phases_median_s": phases(map_timing),
            "max_rel_diff_eval_loss_map": rel_map,
            "sweep_vmap": _stats(vmap_times),
            "speedup_vmap_median": round(_median(seq_times) / _median(vmap_times), 2),
            "sweep_vmap_phases_median_s": phases(vmap_timing),
            "max_rel_diff_eval_loss_vmap": rel_vmap,
        },
        "execution_only": {
            "sequential_compiled_once": _stats(exec_seq),
            "sweep_map": _stats(exec_map),
            "speedup_map_median": round(_median(exec_seq) / _median(exec_map), 2),
            "sweep_vmap": _stats(exec_vmap),
            "speedup_vmap_median": round(_median(exec_seq) / _median(exec_vmap), 2),
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
            sweep_cmd = [sys.executable, "-m", "rnnjax", "sweep", *flags, "--init-gain",
                         ",".join(map(repr, cfg.init_gains)), "--seeds", ",".join(map(str, cfg.seeds))]
            cli_sweep = {}
            for name, extra in (("map", []), ("vmap", ["--vectorize"])):
                cmd = [*sweep_cmd, *extra, "--out", os.path.join(tmp, f"sweep_{name}")]
                t = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                cli_sweep[name] = (time.perf_counter() - t, shlex.join(cmd[1:]))
        results["cli_processes"] = {"sequential_s": round(cli_seq, 2)}
        for name, (seconds, command) in cli_sweep.items():
            results["cli_processes"].update({f"sweep_{name}_s": round(seconds, 2),
                                             f"speedup_{name}": round(cli_seq / seconds, 2),
                                             f"sweep_{name}_command": command})

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

    def cell(stats, digits):
        return f"{stats['median_s']:.{digits}f} ({stats['min_s']:.{digits}f}-{stats['max_s']:.{digits}f})"

    lines = [
        f"# Sweep of {n} runs vs the same runs one after another",
        "",
        f"{n} runs ({cfg.cell}, H={cfg.hidden}, T={cfg.seq_len}, B={cfg.batch_size}, {cfg.steps} steps, "
        f"init gains {list(cfg.init_gains)} x seeds {list(cfg.seeds)}), {results['environment']['device']}, "
        f"{os.cpu_count()} cores, load average {None if load is None else round(load[0], 1)}; "
        f"median (min-max) of {cfg.repeats} repeats.",
        "",
        "Sequential = what `rnnjax train` does per run (XLA's default compiler options). `rnnjax sweep` "
        "(default, `lax.map` inside one program, XLA's defaults) and `rnnjax sweep --vectorize` (`jax.vmap`, "
        "trainers built batch-invariant, compiled with `rnnjax.train.compiler_options()`).",
        "",
        "| comparison | sequential (s) | sweep (s) | speedup |",
        "|---|---:|---:|---:|",
        f"| end to end in one process (build, compile, train, eval), `rnnjax sweep` | {cell(e['sequential'], 2)} | "
        f"{cell(e['sweep_map'], 2)} | {e['speedup_map_median']:.1f}x |",
        f"| end to end in one process, `rnnjax sweep --vectorize` | {e['sequential']['median_s']:.2f} | "
        f"{cell(e['sweep_vmap'], 2)} | {e['speedup_vmap_median']:.1f}x |",
        f"| execution only (single-run program compiled once, called {n}x), `rnnjax sweep` | "
        f"{cell(x['sequential_compiled_once'], 3)} | {cell(x['sweep_map'], 3)} | {x['speedup_map_median']:.1f}x |",
        f"| execution only, `rnnjax sweep --vectorize` | {x['sequential_compiled_once']['median_s']:.3f} | "
        f"{cell(x['sweep_vmap'], 3)} | {x['speedup_vmap_median']:.1f}x |",
    ]
    if "cli_processes" in results:
        c = results["cli_processes"]
        lines += [f"| {n} `rnnjax train` processes vs one `rnnjax sweep` | {c['sequential_s']:.1f} | "
                  f"{c['sweep_map_s']:.1f} | {c['speedup_map']:.1f}x |",
                  f"| {n} `rnnjax train` processes vs one `rnnjax sweep --vectorize` | {c['sequential_s']:.1f} | "
                  f"{c['sweep_vmap_s']:.1f} | {c['speedup_vmap']:.1f}x |"]
    lines += ["",
              f"Sweep phases (median s): `rnnjax sweep` {e['sweep_map_phases_median_s']}; `rnnjax sweep --vectorize` "
              f"{e['sweep_vmap_phases_median_s']}.",
              "",
              f"Largest relative difference of the final eval losses vs the sequential runs: `rnnjax sweep` "
              f"{e['max_rel_diff_eval_loss_map']:.2g} (bitwise by construction), `rnnjax sweep --vectorize` "
              f"{e['max_rel_diff_eval_loss_vmap']:.2g} (float rounding of the batch-invariant build, amplified by "
              f"training).",
              "",
              f"Command: `{_command(cfg)}`", ""]
    with open(os.path.join(out_dir, "sweep_vs_sequential.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
