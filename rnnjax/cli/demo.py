"""``rnnjax demo``: tanh Elman RNN vs LSTM vs GRU on the adding problem, in about a minute on a laptop CPU.

Trains each cell with the same settings (Adam, clipping 1, orthogonal recurrent
init), prints a table of the final evaluation MSE against the 1/6 baseline of
predicting the mean, and the gradient norm that reaches the first time step,
``||dL/dc_0||`` (mean over evaluation sequences), before and after training;
writes ``learning_curves.png`` (training loss, evaluation MSE and the profile
``||dL/dc_t||`` against ``t`` at initialisation and after training: the
vanishing gradient made visible) and ``demo.json`` to ``--out``. The gradients
come from the model's own loss (``rnnjax.models.grad_profile``).
"""

from __future__ import annotations

import json
import os
import sys
import time

from rnnjax.cli import CLIError, parse_list

DEFAULT_CELLS = ("elman-tanh", "lstm", "gru")


def register(subparsers) -> None:
    """Add the ``demo`` command."""
    p = subparsers.add_parser(
        "demo",
        help="tanh RNN vs LSTM vs GRU on the adding problem (about a minute on CPU)",
        description="Train a tanh Elman RNN, an LSTM and a GRU on the adding problem and show why gating matters: "
        "final MSE against the 1/6 baseline and the gradient norm ||dL/dc_t|| at every step t, "
        "at initialisation and after training.",
    )
    p.add_argument("--out", default="runs/demo", help="output directory for the PNG and JSON (default runs/demo)")
    p.add_argument("--seq-len", type=int, default=50, help="sequence length T (default 50)")
    p.add_argument("--steps", type=int, default=600, help="training steps per cell (default 600)")
    p.add_argument("--hidden", type=int, default=32, help="hidden size (default 32)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--cells", default=",".join(DEFAULT_CELLS),
                   help="comma-separated cells (default elman-tanh,lstm,gru)")
    p.add_argument("--eval-every", type=int, default=50, metavar="N",
                   help="evaluation period for the curves (default 50)")
    p.set_defaults(func=demo_command)


def demo_command(args) -> int:
    """Handler of ``rnnjax demo``."""
    for name in ("seq_len", "steps", "hidden", "batch_size", "eval_every"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    if args.seq_len < 2:
        raise CLIError(f"--seq-len: expected at least 2, got {args.seq_len}")
    if not args.lr > 0:
        raise CLIError(f"--lr: expected a positive number, got {args.lr}")
    import jax

    from rnnjax import CELLS
    from rnnjax.models import grad_profile
    from rnnjax.train import RunConfig, build, run_key

    cells = parse_list("--cells", args.cells)
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise CLIError(f"--cells: unknown cell {unknown[0]!r}; expected names from {', '.join(sorted(CELLS))}")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        raise CLIError(f"--out: cannot create {args.out}: {err.strerror}") from None

    print(f"rnnjax demo: adding problem, T={args.seq_len}, H={args.hidden}, batch {args.batch_size}, "
          f"{args.steps} Adam steps (lr {args.lr}, clip 1) per cell; baseline MSE 1/6 = 0.1667", flush=True)
    results = {}
    t_all = time.perf_counter()
    for name in cells:
        t0 = time.perf_counter()
        config = RunConfig(task="adding", cell=name, hidden=args.hidden, seq_len=args.seq_len,
                           batch_size=args.batch_size, steps=args.steps, lr=args.lr, clip=1.0, seed=args.seed,
                           task_options=(("eval_size", 500),))
        trainer = build(config)
        eval_batch = trainer.task.eval_batch()
        probe = jax.tree.map(lambda a: a[:64], eval_batch)
        state = jax.jit(trainer.init)(run_key(args.seed))
        run = jax.jit(trainer.run, static_argnums=1)
        evaluate = jax.jit(trainer.evaluate)
        profile = jax.jit(lambda p: grad_profile(trainer.model, p, probe))  # (T,) mean ||dL/dc_t||
        g_start = [float(g) for g in profile(state.params)]
        curve = [(0, float(evaluate(state.params)["loss"]))]
        train_loss = []
        step = 0
        while step < args.steps:
            n = min(args.eval_every, args.steps - step)
            state, m = run(state, n)
            step += n
            train_loss.extend(float(x) for x in m["loss"])
            curve.append((step, float(evaluate(state.params)["loss"])))
        g_end = [float(g) for g in profile(state.params)]
        results[name] = {
            "final_mse": curve[-1][1],
            "grad_norm_first_step_start": g_start[0],
            "grad_norm_first_step_end": g_end[0],
            "grad_norms_start": g_start,
            "grad_norms_end": g_end,
            "eval_curve": curve,
            "train_loss": train_loss,
            "skipped_steps": int(state.skipped),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"  {name:<11} final MSE {curve[-1][1]:.4f}   ({results[name]['seconds']:.0f} s)", flush=True)

    baseline = 1.0 / 6.0
    print()
    header = f"{'cell':<12}{'final MSE':>11}{'/ baseline':>12}{'solved':>8}{'|dL/dh_0| start':>18}{'|dL/dh_0| end':>16}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        solved = "yes" if r["final_mse"] < 0.1 * baseline else "no"
        print(f"{name:<12}{r['final_mse']:>11.4f}{r['final_mse'] / baseline:>12.3f}{solved:>8}"
              f"{r['grad_norm_first_step_start']:>18.2e}{r['grad_norm_first_step_end']:>16.2e}")
    print(f"\nbaseline (predict the mean): MSE 1/6 = {baseline:.4f}; 'solved' = below a tenth of it. "
          f"Total {time.perf_counter() - t_all:.0f} s.")

    summary = {
        "task": "adding", "seq_len": args.seq_len, "hidden": args.hidden, "batch_size": args.batch_size,
        "steps": args.steps, "lr": args.lr, "clip": 1.0, "seed": args.seed, "baseline_mse": baseline,
        "results": results,
    }
    with open(os.path.join(args.out, "demo.json"), "w") as f:
        json.dump(summary, f, indent=1)
    png = os.path.join(args.out, "learning_curves.png")
    _plot(results, baseline, args, png)
    print(f"wrote {png} and {os.path.join(args.out, 'demo.json')}")
    return 0


def _plot(results, baseline, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, r in results.items():
        loss = np.asarray(r["train_loss"])
        k = max(1, len(loss) // 60)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        (line,) = ax[0].plot(np.arange(len(smooth)) + k, smooth, label=name, alpha=0.9)
        steps, ev = zip(*r["eval_curve"])
        ax[1].plot(steps, ev, "o-", ms=3, color=line.get_color(), label=name)
        for key, style, when in (("grad_norms_start", "--", "init"), ("grad_norms_end", "-", "trained")):
            ax[2].plot(np.arange(len(r[key])), r[key], style, color=line.get_color(), label=f"{name} ({when})")
    for a, title in zip(ax, ("training loss (running mean)", "evaluation MSE")):
        a.axhline(baseline, color="k", ls="--", lw=1, label="baseline 1/6")
        a.axhline(0.1 * baseline, color="gray", ls=":", lw=1, label="baseline / 10")
        a.set_xlabel("step")
        a.set_title(title)
    for a in ax:
        a.set_yscale("log")
        a.legend(fontsize=8)
    ax[2].set_xlabel("time step t (the loss reads the last one)")
    ax[2].set_title(r"gradient reaching step $t$: $\|\partial L/\partial h_t\|$ (dashed: at init)")
    fig.suptitle(f"Adding problem, T = {args.seq_len}, H = {args.hidden} (rnnjax demo)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    from rnnjax.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
