"""Do the rows of an `rnnjax sweep` equal the separate `rnnjax train` runs, over long chaotic runs?

Runs ``rnnjax sweep`` with the given flags (``--vectorize`` passed through),
then every row's own ``command`` (``rnnjax train ... --init-gain g --lr lr
--seed s``) one after another, and compares each row's final evaluation loss
and final training loss with the separate run's ``summary.json`` /
``metrics.jsonl``.

- Default sweep (``lax.map``: the runs one after another inside one compiled
  program, XLA's defaults like ``rnnjax train``): every row equals the
  separate run bit for bit, on every backend, by construction.
- ``--vectorize`` (``jax.vmap``; trainers built with ``batch_invariant=True``,
  compiled with ``rnnjax.train.compiler_options()``): rows equal single runs
  built and compiled that way, not the default ``rnnjax train`` run, so expect
  float-rounding differences that long, chaotic training amplifies. (A plain
  ``jax.vmap`` of the single run, with neither, once differed by up to 176 %
  (tanh RNN) and 310 % (LSTM) in the final evaluation loss of a 9-run sweep of
  1000 steps.)

Writes ``config.json``, ``results.json`` (one row per run: sweep vs separate
losses, relative differences) and ``sweep_exactness.png`` to ``--out``.

Usage (about 4 min per cell on 2 CPU cores)::

    python experiments/sweep_exactness.py --out runs/sweep_exactness --cell lstm
    python experiments/sweep_exactness.py --out runs/sweep_exactness_tanh --cell elman-tanh
    python experiments/sweep_exactness.py --out runs/sweep_exactness_vmap --cell lstm --vectorize
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rnnjax.cli import main as rnnjax_main  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/sweep_exactness")
    p.add_argument("--task", default="adding")
    p.add_argument("--cell", default="lstm")
    p.add_argument("--init-gain", default="0.5,1.0,1.5")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lr", default="1e-3")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--vectorize", action="store_true",
                   help="check `rnnjax sweep --vectorize` (jax.vmap) instead of the default sweep (lax.map)")
    return p.parse_args()


def _quiet(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return rnnjax_main(argv)


def _rel(a, b) -> float | None:
    if a is None or b is None:
        return None if a is None and b is None else float("inf")
    return 0.0 if a == b else abs(a - b) / max(abs(b), 1e-30)


def main() -> None:
    args = parse()
    os.makedirs(args.out, exist_ok=True)
    flags = ["--task", args.task, "--cell", args.cell, "--init-gain", args.init_gain, "--seeds", args.seeds,
             "--lr", args.lr, "--steps", str(args.steps)] + (["--vectorize"] if args.vectorize else [])
    method = "vmap" if args.vectorize else "map"
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"sweep_flags": flags, "method": method}, f, indent=2)
    t0 = time.perf_counter()
    sweep_dir = os.path.join(args.out, "sweep")
    if _quiet(["sweep", *flags, "--out", sweep_dir]) != 0:
        raise SystemExit(f"rnnjax sweep failed; see {sweep_dir}")
    sweep_s = time.perf_counter() - t0
    with open(os.path.join(sweep_dir, "sweep.json")) as f:
        rows = json.load(f)["runs"]
    results, t0 = [], time.perf_counter()
    for i, row in enumerate(rows):
        argv = shlex.split(row["command"])[1:]  # drop the program name
        run_dir = os.path.join(args.out, "train", f"run{i}")
        argv[argv.index("--out") + 1] = run_dir
        code = _quiet(argv)
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            last = [json.loads(line) for line in f][-1]
        res = {"init_gain": row["init_gain"], "seed": row["seed"], "lr": row["lr"], "train_exit_code": code,
               "sweep_eval_loss": row["eval_loss"], "train_eval_loss": summary["eval"]["loss"],
               "sweep_final_train_loss": row["final_train_loss"], "train_final_train_loss": last["loss"]}
        res["rel_diff_eval_loss"] = _rel(row["eval_loss"], summary["eval"]["loss"])
        res["rel_diff_train_loss"] = _rel(row["final_train_loss"], last["loss"])
        res["bitwise"] = row["eval_loss"] == summary["eval"]["loss"] and row["final_train_loss"] == last["loss"]
        results.append(res)
        print(f"gain {row['init_gain']} seed {row['seed']} lr {row['lr']}: sweep eval {row['eval_loss']:.7g}, "
              f"train eval {summary['eval']['loss']:.7g}, relative difference {res['rel_diff_eval_loss']:.3g}",
              flush=True)
    train_s = time.perf_counter() - t0
    worst = max((r["rel_diff_eval_loss"] for r in results if r["rel_diff_eval_loss"] is not None), default=0.0)
    summary = {"method": method, "runs": results, "max_rel_diff_eval_loss": worst,
               "all_bitwise": all(r["bitwise"] for r in results), "sweep_wall_s": round(sweep_s, 1),
               "separate_runs_wall_s": round(train_s, 1)}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    xs = [r["train_eval_loss"] for r in results]
    ys = [r["sweep_eval_loss"] for r in results]
    ax.scatter(xs, ys, c=[r["init_gain"] for r in results], cmap="viridis")
    lo, hi = min(xs + ys), max(xs + ys)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("separate `rnnjax train` run: eval loss")
    ax.set_ylabel(f"row of `rnnjax sweep{' --vectorize' if args.vectorize else ''}`: eval loss")
    ax.set_title(f"{args.cell}, {args.task}, {args.steps} steps, {method}: max rel. diff {worst:.3g}")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "sweep_exactness.png"), dpi=120)
    print(f"{method} sweep: max relative eval-loss difference {worst:.3g}; "
          f"all rows bitwise: {summary['all_bitwise']} (sweep {sweep_s:.0f} s, {len(results)} separate runs "
          f"{train_s:.0f} s) -> {args.out}")


if __name__ == "__main__":
    main()
