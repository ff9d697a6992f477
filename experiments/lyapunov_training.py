"""The Lyapunov spectrum through training: tanh RNN, LSTM and GRU on the adding problem.

Each cell and seed is one ``rnnjax train --task adding --lyapunov-every N --lyapunov-k 3`` run (the
command is printed); its ``lyapunov.jsonl`` holds the top 3 exponents, the mean over 8 evaluation
sequences, every N steps. The table gives lambda_1 at initialisation, half-way and at the end, and the
final eval MSE, mean ± 95 % CI over seeds (``rnnjax.study.interval``); the figure lambda_1 against the
training step (mean and CI band per cell).

Usage::

    python experiments/lyapunov_training.py --out runs/lyapunov_training     # the committed table
    python experiments/lyapunov_training.py --seeds 0,1 --steps 100 --out /tmp/lt   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from rnnjax import study

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--cells", default="elman-tanh,lstm,gru")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--out", required=True)
    p.add_argument("--table", default=os.path.join(HERE, "results", "lyapunov_training.md"))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = args.cells.split(",")
    os.makedirs(os.path.dirname(os.path.abspath(args.table)), exist_ok=True)
    curves, losses, t0 = {}, {}, time.perf_counter()
    for cell in cells:
        for s in seeds:
            out = os.path.join(args.out, f"{cell}_s{s}")
            cmd = [sys.executable, "-m", "rnnjax", "train", "--task", "adding", "--seq-len", "50", "--cell", cell,
                   "--hidden", "32", "--batch-size", "32", "--steps", str(args.steps), "--lr", "3e-3",
                   "--seed", str(s), "--lyapunov-every", str(args.every), "--lyapunov-k", "3", "--out", out]
            if not os.path.exists(os.path.join(out, "summary.json")):
                print(" ".join(cmd[2:]), file=sys.stderr, flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(os.path.join(out, "lyapunov.jsonl")) as f:
                rows = [json.loads(line) for line in f]
            curves.setdefault(cell, []).append(([r["step"] for r in rows], [r["exponents"][0] for r in rows]))
            with open(os.path.join(out, "summary.json")) as f:
                losses.setdefault(cell, []).append(json.load(f)["eval"]["loss"])
    wall = time.perf_counter() - t0

    def fmt(stat):
        return f"{stat['mean']:.3g} ± {stat['ci95']:.2g}" if stat["ci95"] is not None else f"{stat['mean']:.3g}"

    steps = curves[cells[0]][0][0]
    mid = steps[len(steps) // 2]
    lines = [f"| cell | λ_1 at step 0 | λ_1 at step {mid} | λ_1 at step {steps[-1]} | eval MSE (baseline 1/6) |",
             "|---|---|---|---|---|"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    for cell in cells:
        lam = np.array([c[1] for c in curves[cell]], dtype=np.float64)  # (seeds, points)
        cols = [study.interval(lam[:, j].tolist()) for j in range(lam.shape[1])]
        lines.append(f"| {cell} | {fmt(cols[0])} | {fmt(cols[len(steps) // 2])} | {fmt(cols[-1])} | "
                     f"{fmt(study.interval(losses[cell]))} |")
        mean = np.array([c["mean"] for c in cols])
        half = np.array([c["ci95"] or 0.0 for c in cols])
        ax.plot(steps, mean, marker="o", ms=3, label=cell)
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xlabel("training step")
    ax.set_ylabel("λ_1 (nats/step)")
    ax.set_title(f"largest Lyapunov exponent through training (adding, T = 50; {len(seeds)} seeds, 95 % CI)",
                 fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    stem = os.path.splitext(args.table)[0]
    fig.savefig(stem + ".png")
    table = "\n".join(lines)
    print(table)
    with open(args.table, "w") as f:
        f.write(f"# The Lyapunov spectrum through training on the adding problem, {len(seeds)} seeds\n\n"
                f"Command: `python experiments/lyapunov_training.py --out DIR` ({wall / 60:.1f} min wall, "
                f"{len(cells) * len(seeds)} runs, on a {os.cpu_count()}-core CPU shared with other jobs). Budget per "
                f"run: adding, T = 50, H = 32, batch 32, {args.steps} Adam steps (lr 3e-3, clip 1), default init; "
                f"`--lyapunov-every {args.every} --lyapunov-k 3` (mean over 8 evaluation sequences, transient "
                f"T // 10). Mean ± 95 % CI over seeds.\n\n{table}\n\n"
                f"![lambda_1 through training]({os.path.basename(stem)}.png)\n")
    print(f"wrote {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
