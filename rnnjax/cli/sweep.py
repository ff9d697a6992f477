"""``rnnjax sweep``: train a grid of init gains × learning rates × seeds in one compiled program.

Every run equals ``rnnjax train`` with the same flags and ``--init-gain g --lr lr --seed s``
(the flags of each run are parsed by the ``train`` parser itself). Writes to ``--out DIR``:

- ``sweep.json``: ``{"config": {...shared flags}, "runs": [{"init_gain", "seed", "lr", "eval_loss",
  "eval_accuracy", "baseline_loss", "final_train_loss", "skipped_steps", "steps", "status", "command"}, ...],
  "timing": {...}, "devices": N, "platform": ...}``;
- ``sweep.png``: final evaluation loss against the init gain, one colour per learning rate, one dot per seed.

``--devices N`` splits the runs over N devices. By default the runs' gradients are vectorised (``jax.vmap``)
and every row is bitwise the separate run on CPU (see ``rnnjax.sweep``); ``--exact`` runs whole runs one
after another inside the one compiled program (``jax.lax.map``), bitwise on every backend.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys

from rnnjax.cli import CLIError, parse_list

# train flags a sweep shares between all its runs: (flag, type, default, help)
_SHARED = (
    ("--hidden", int, 64, "hidden size H (default 64)"),
    ("--seq-len", int, None, "sequence length T (default: the task's)"),
    ("--batch-size", int, 64, "batch size B (default 64)"),
    ("--steps", int, 1000, "optimizer steps of every run (default 1000)"),
    ("--clip", float, 1.0, "global gradient-norm clipping threshold; 0 = off (default 1)"),
    ("--optimizer", str, "adam", "adam, sgd, rmsprop or adamw (default adam)"),
    ("--tbptt", int, None, "truncated BPTT in chunks of K steps"),
    ("--max-skips", int, 20, "a run stops after N consecutive non-finite steps (default 20)"),
)


def register(subparsers) -> None:
    """Add the ``sweep`` command."""
    from rnnjax.distributed import add_device_arguments

    p = subparsers.add_parser(
        "sweep",
        help="train seeds x init gains x learning rates in one compiled program",
        description="Train every (init gain, learning rate, seed) run of a grid inside ONE jitted program "
        "(jax.vmap over a run axis, optionally split over --devices). Each run equals `rnnjax train` with the "
        "same flags. Writes DIR/sweep.json and DIR/sweep.png.",
    )
    p.add_argument("--task", required=True, help="task name, e.g. adding, copy, digits")
    p.add_argument("--cell", required=True, help="cell name: elman-tanh, elman-relu, elman-linear, irnn, lstm, gru")
    p.add_argument("--init-gain", default="1.0", metavar="G1,G2,...",
                   help="comma-separated recurrent init gains (default 1.0)")
    p.add_argument("--seeds", default="0", metavar="S1,S2,...", help="comma-separated seeds (default 0)")
    p.add_argument("--lr", default="1e-3", metavar="LR1,LR2,...", help="comma-separated learning rates (default 1e-3)")
    for flag, kind, default, text in _SHARED:
        p.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra task option (as for rnnjax train), repeatable")
    p.add_argument("--text", default=None, metavar="FILE", help="text file for the charlm task")
    p.add_argument("--exact", action="store_true",
                   help="run the runs one after another inside the one compiled program (jax.lax.map) instead of "
                   "vectorised (jax.vmap): bitwise equal to the separate rnnjax train runs on any backend (the vmapped "
                   "default is bitwise on CPU), no vectorisation")
    p.add_argument("--out", required=True, help="output directory (must be new or empty)")
    add_device_arguments(p, what="runs of the sweep (single host)", multihost=False)
    p.set_defaults(func=sweep_command)


def train_argv(args, init_gain: float, lr: float, seed: int, out: str) -> list[str]:
    """The ``rnnjax train`` arguments of one run of the sweep."""
    argv = ["train", "--task", args.task, "--cell", args.cell]
    for flag, _kind, _default, _text in _SHARED:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    for item in args.task_option:
        argv += ["--task-option", item]
    if args.text is not None:
        argv += ["--text", args.text]
    return argv + ["--init-gain", repr(init_gain), "--lr", repr(lr), "--seed", str(seed), "--out", out]


def configs_from_args(args) -> tuple[list, list[list[str]]]:
    """Every run's ``RunConfig`` (parsed and validated by ``rnnjax train``'s own parser) and its argv."""
    from rnnjax.cli import train as train_cli

    gains = parse_list("--init-gain", args.init_gain, float)
    lrs = parse_list("--lr", args.lr, float)
    seeds = parse_list("--seeds", args.seeds, int)
    parser = argparse.ArgumentParser(prog="rnnjax", add_help=False)
    train_cli.register(parser.add_subparsers(dest="command"))
    configs, argvs = [], []
    for g in gains:
        for lr in lrs:
            for s in seeds:
                argv = train_argv(args, g, lr, s, os.path.join(args.out, "runs", f"gain{g:g}_lr{lr:g}_seed{s}"))
                configs.append(train_cli.config_from_args(parser.parse_args(argv)))
                argvs.append(argv)
    return configs, argvs


def sweep_command(args) -> int:
    """Handler of ``rnnjax sweep``."""
    from rnnjax import CELLS
    from rnnjax.tasks import TASKS

    if args.task not in TASKS:
        raise CLIError(f"--task: unknown task {args.task!r}; expected one of {', '.join(sorted(TASKS))}")
    if args.cell not in CELLS:
        raise CLIError(f"--cell: unknown cell {args.cell!r}; expected one of {', '.join(sorted(CELLS))}")
    configs, argvs = configs_from_args(args)
    out = args.out
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise CLIError(f"--out: {out} is not a new or empty directory; choose another")
    from rnnjax.distributed import mesh_from_args  # before the first JAX operation

    mesh = mesh_from_args(args, multihost=False)
    import jax

    from rnnjax import sweep as sw

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"sweep: {len(configs)} runs ({args.task}, {args.cell}, {args.steps} steps each)")
    try:
        result = sw.run_sweep(configs, mesh=mesh, method="map" if args.exact else "vmap", log=log)
    except ValueError as err:
        raise CLIError(str(err).splitlines()[0]) from None
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise CLIError(f"--out: cannot create {out}: {err.strerror}") from None
    rows = [dict(row, command="rnnjax " + shlex.join(argv)) for row, argv in zip(result.rows, argvs)]
    shared = {k: v for k, v in dataclasses.asdict(configs[0]).items() if k not in sw.SWEPT_FIELDS}
    shared["task_options"] = dict(configs[0].task_options)
    report = {
        "config": shared,
        "runs": rows,
        "timing": {k: round(v, 3) for k, v in result.timing.items()},
        "devices": 1 if mesh is None else mesh.size,
        "method": "map" if args.exact else "vmap",
        "platform": jax.devices()[0].platform,
        "jax_version": jax.__version__,
    }
    from rnnjax.cli.train import write_json

    write_json(os.path.join(out, "sweep.json"), report)
    plot_sweep(rows, os.path.join(out, "sweep.png"), title=f"{args.task}, {args.cell}, {args.steps} steps")
    print(f"{'init_gain':>9} {'lr':>9} {'seed':>5} {'eval_loss':>10} {'skipped':>7}  status")
    for r in rows:
        loss = "nan" if r["eval_loss"] is None else f"{r['eval_loss']:.4g}"
        print(f"{r['init_gain']:>9g} {r['lr']:>9g} {r['seed']:>5d} {loss:>10} {r['skipped_steps']:>7d}  {r['status']}")
    base = rows[0]["baseline_loss"]
    if base is not None:
        print(f"baseline loss {base:.4g}")
    print(f"wrote {os.path.join(out, 'sweep.json')} and sweep.png "
          f"({result.timing['total_s']:.1f} s, compile {result.timing['compile_s']:.1f} s)")
    return 0


def plot_sweep(rows: list[dict], path: str, *, title: str = "") -> None:
    """Final evaluation loss against init gain: one colour per learning rate, dots per seed, line = mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    lrs = sorted({r["lr"] for r in rows})
    for i, lr in enumerate(lrs):
        sel = [r for r in rows if r["lr"] == lr]
        gains = sorted({r["init_gain"] for r in sel})
        color = f"C{i}"
        xs = [r["init_gain"] for r in sel if r["eval_loss"] is not None]
        ys = [r["eval_loss"] for r in sel if r["eval_loss"] is not None]
        ax.scatter(xs, ys, color=color, s=14, alpha=0.6)
        means = []
        for g in gains:
            finite = [r["eval_loss"] for r in sel if r["init_gain"] == g and r["eval_loss"] is not None]
            means.append(np.mean(finite) if finite else np.nan)
        ax.plot(gains, means, color=color, marker="o", label=f"lr {lr:g}")
    base = rows[0].get("baseline_loss")
    if base is not None:
        ax.axhline(base, color="gray", linestyle="--", linewidth=1, label="baseline")
    ax.set_xlabel("recurrent init gain")
    ax.set_ylabel("final eval loss")
    if all(r["eval_loss"] is None or r["eval_loss"] > 0 for r in rows):
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
