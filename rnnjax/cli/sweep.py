"""``rnnjax sweep``: train a grid of init gains × learning rates × seeds in one compiled program.

Every run equals ``rnnjax train`` with the same flags and ``--init-gain g --lr lr --seed s``, bit for
bit (the shared flags are generated from ``rnnjax.train.RunConfig``, as ``rnnjax train``'s are), and every
run is scored on the same evaluation set (``--eval-seed``). Holds an exclusive lock on ``--out`` for the
whole sweep. Writes to ``--out DIR``:

- ``sweep.json``: ``{"config": {...shared flags}, "runs": [{"init_gain", "seed", "lr", "eval_seed", "eval_loss",
  "eval_accuracy", "baseline_loss", "final_train_loss", "skipped_steps", "steps", "status", "command"}, ...],
  "timing": {...}, "devices": N, "method": ..., "platform": ...}``;
- ``sweep.png``: final evaluation loss against the init gain, one colour per learning rate, one dot per seed.

``--devices N`` splits the runs over N devices. By default the runs execute one after another inside the
one compiled program (``jax.lax.map``: bitwise the separate runs on every backend); ``--vectorize`` batches
their gradients with ``jax.vmap`` instead (faster on accelerators; rows then differ from the separate runs
by float rounding, see ``rnnjax.sweep``).
"""

from __future__ import annotations

import os
import shlex
import sys

from rnnjax.cli import CLIError, parse_list
from rnnjax.cli._runflags import add_run_arguments, config_from_args, run_argv

SWEPT = ("init_gain", "seed", "lr")
NOT_FOR_SWEEPS = ("eval_every", "checkpoint_every", "log_every", "gradflow_every", "tensorboard",
                  "lyapunov_every", "lyapunov_k")


def register(subparsers) -> None:
    """Add the ``sweep`` command."""
    from rnnjax.cli._devices import add_device_arguments

    p = subparsers.add_parser(
        "sweep",
        help="train seeds x init gains x learning rates in one compiled program",
        description="Train every (init gain, learning rate, seed) run of a grid inside ONE jitted program "
        "(optionally split over --devices). Each run equals `rnnjax train` with the same flags, bit for bit, and "
        "every run is scored on the same evaluation set. Writes DIR/sweep.json and DIR/sweep.png.",
    )
    p.add_argument("--init-gain", default="1.0", metavar="G1,G2,...",
                   help="comma-separated recurrent init gains (default 1.0)")
    p.add_argument("--seeds", default="0", metavar="S1,S2,...",
                   help="comma-separated seeds of parameters and data order (default 0)")
    p.add_argument("--lr", default="1e-3", metavar="LR1,LR2,...", help="comma-separated learning rates (default 1e-3)")
    add_run_arguments(p, exclude=SWEPT + NOT_FOR_SWEEPS)
    p.add_argument("--vectorize", action="store_true",
                   help="batch the runs' gradients with jax.vmap instead of running them one after another in the "
                   "compiled program (faster on accelerators; rows then differ from the separate rnnjax train runs "
                   "by float rounding)")
    p.add_argument("--out", required=True, help="output directory (must be new or empty)")
    add_device_arguments(p, what="runs of the sweep (single host)", multihost=False)
    p.set_defaults(func=sweep_command)


def configs_from_args(args) -> tuple[list, list[list[str]]]:
    """Every run's validated ``RunConfig`` and the ``rnnjax train`` argv that reproduces it."""
    gains = parse_list("--init-gain", args.init_gain, float)
    lrs = parse_list("--lr", args.lr, float)
    seeds = parse_list("--seeds", args.seeds, int)
    configs, argvs = [], []
    for g in gains:
        for lr in lrs:
            for s in seeds:
                config = config_from_args(args, init_gain=g, lr=lr, seed=s)
                configs.append(config)
                argvs.append(run_argv(config, out=os.path.join(args.out, "runs", f"gain{g:g}_lr{lr:g}_seed{s}")))
    return configs, argvs


def sweep_command(args) -> int:
    """Handler of ``rnnjax sweep``."""
    from rnnjax.cli._devices import mesh_from_args

    configs, argvs = configs_from_args(args)
    out = args.out
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise CLIError(f"--out: {out} is not a new or empty directory; choose another")
    mesh = mesh_from_args(args, multihost=False)  # before the first JAX operation
    import jax

    from rnnjax import sweep as sw
    from rnnjax.rundir import DirectoryBusy, RunLock, write_json

    method = "vmap" if args.vectorize else "map"
    try:
        lock = RunLock(out)
    except DirectoryBusy as err:
        raise CLIError(f"--out: {err}") from None
    except OSError as err:
        raise CLIError(f"--out: cannot create {out}: {err.strerror}") from None
    try:
        if os.listdir(out):  # claimed by another sweep between the check above and the lock
            raise CLIError(f"--out: {out} is not a new or empty directory; choose another")
        log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
        log(f"sweep: {len(configs)} runs ({args.task}, {args.cell}, {args.steps} steps each)")
        try:
            result = sw.run_sweep(configs, mesh=mesh, method=method, log=log)
        except ValueError as err:
            raise CLIError(str(err).splitlines()[0]) from None
        lock.record()
        rows = [dict(row, command="rnnjax " + shlex.join(argv)) for row, argv in zip(result.rows, argvs)]
        shared = {k: v for k, v in configs[0].to_json().items() if k not in sw.SWEPT_FIELDS}
        report = {
            "config": shared,
            "runs": rows,
            "timing": {k: round(v, 3) for k, v in result.timing.items()},
            "devices": 1 if mesh is None else mesh.size,
            "method": method,
            "platform": jax.devices()[0].platform,
            "jax_version": jax.__version__,
        }
        write_json(os.path.join(out, "sweep.json"), report)
        plot_sweep(rows, os.path.join(out, "sweep.png"), title=f"{args.task}, {args.cell}, {args.steps} steps")
    finally:
        lock.release()
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
