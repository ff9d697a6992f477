"""Sentiment of Rotten Tomatoes snippets: a bidirectional GRU (last state vs mean pooling) against
the majority class and a bag-of-words logistic regression, all on one film split.

Five seeds per readout on the study engine (``rnnjax.study.run_study``); the baselines are
deterministic (one value each). Writes ``experiments/results/app_sentiment.{md,json,png}``.

Usage::

    python experiments/app_sentiment.py --out runs/app_sentiment          # the committed table (~15 min, 2-core CPU)
    python experiments/app_sentiment.py --out /tmp/s --steps 50 --seeds 0,1 --table /tmp/s/t.md   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from rnnjax import study
from rnnjax.tasks import get_task
from rnnjax.train import RunConfig

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Config:
    cell: str = "gru"
    hidden: int = 64
    embed: int = 64
    batch_size: int = 64
    steps: int = 300
    lr: float = 3e-3
    seeds: str = "0,1,2,3,4"
    pools: str = "last,mean"


def main(argv=None) -> int:
    cfg = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(cfg):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--out", required=True)
    p.add_argument("--table", default=os.path.join(HERE, "results", "app_sentiment.md"))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = RunConfig(task="sentiment", cell=args.cell, hidden=args.hidden, embed=args.embed, bidirectional=True,
                     batch_size=args.batch_size, steps=args.steps, lr=args.lr)
    t0 = time.perf_counter()
    result = study.run_study(base, {"pool": args.pools.split(",")}, seeds, out=args.out, gradflow=False,
                             solved="accuracy>0.7", log=lambda m: print(m, file=sys.stderr, flush=True))
    rnn_s = time.perf_counter() - t0
    task = get_task("sentiment")
    t1 = time.perf_counter()
    bow = task.info["bow_baseline"]()
    bow_s = time.perf_counter() - t1
    info = task.info

    rows = []
    for c in result.configurations:
        acc, loss = c["metrics"]["eval_accuracy"], c["metrics"]["eval_loss"]
        rows.append((f"bi-{args.cell.upper()} H={args.hidden}, E={args.embed}, readout: {c['settings']['pool']}",
                     f"{100 * acc['mean']:.1f} ± {100 * acc.get('ci95', float('nan')):.1f}",
                     f"{loss['mean']:.3f} ± {loss.get('ci95', float('nan')):.3f}",
                     f"{len(acc['values'])} seeds, {args.steps} steps × {args.batch_size}"))
    rows.append(("majority class (rotten/fresh prior)", f"{100 * info['majority_accuracy']:.1f}",
                 f"{task.baseline_loss:.3f}", "counts"))
    rows.append((f"bag-of-words logistic regression (C={bow['C']:g}, 5-fold CV on train)",
                 f"{100 * bow['accuracy']:.1f}", f"{bow['loss']:.3f}", f"scikit-learn, {bow_s:.0f} s"))
    best = max(c["metrics"]["eval_accuracy"]["mean"] for c in result.configurations)
    gap = 100 * (best - bow["accuracy"])
    lines = [
        "# Sentiment: Rotten Tomatoes critic snippets (fresh vs rotten)",
        "",
        f"Split by film (seed 0): {info['train_size']} training / {info['eval_size']} evaluation snippets; "
        f"vocabulary {info['vocab_size']} (training split only; {100 * info['unk_rate_eval']:.1f} % of evaluation "
        "tokens are `<unk>`). Every row is scored on the same evaluation snippets.",
        "",
        "| model | accuracy % (mean ± 95 % CI) | cross-entropy (nats) | budget |",
        "|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
        f"Target: the RNN within 3 points of bag-of-words: best readout {100 * best:.1f} % vs "
        f"{100 * bow['accuracy']:.1f} %"
        f" ({gap:+.1f} points) — {'met' if gap >= -3 else 'missed'}.",
        "",
        f"Budget: {args.steps} Adam steps (lr {args.lr:g}, clip 1, batch {args.batch_size}) per seed; RNN wall time "
        f"{rnn_s / 60:.1f} min for {len(result.configurations) * len(seeds)} runs, compilation included, on a "
        "2-core CPU "
        "shared with other jobs.",
        "",
        f"Command: `python experiments/app_sentiment.py --steps {args.steps} --pools {args.pools} --out DIR` "
        f"(equivalently `rnnjax study --task sentiment --cell "
        f"{args.cell} --hidden {args.hidden} --embed {args.embed} --bidirectional --batch-size {args.batch_size} "
        f"--steps {args.steps} --lr {args.lr:g} --pool {args.pools} --seeds {args.seeds} --no-gradflow --out DIR`).",
        "",
        "Per-seed accuracies: " + "; ".join(
            f"{c['settings']['pool']}: " + ", ".join(f"{100 * v:.1f}" for v in c["metrics"]["eval_accuracy"]["values"])
            for c in result.configurations),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.table), exist_ok=True)
    with open(args.table, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.table)[0] + ".json", "w") as f:
        json.dump({"config": dataclasses.asdict(Config(**{k: getattr(args, k) for k in cfg.__dict__})),
                   "rnn": [{"pool": c["settings"]["pool"], **c["metrics"]} for c in result.configurations],
                   "majority_accuracy": info["majority_accuracy"], "prior_loss": task.baseline_loss,
                   "bow": bow, "rnn_wall_s": rnn_s}, f, indent=1)
    _figure(result, info["majority_accuracy"], bow["accuracy"], os.path.splitext(args.table)[0] + ".png")
    return 0


def _figure(result, majority, bow, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    names, means, cis = [], [], []
    for c in result.configurations:
        m = c["metrics"]["eval_accuracy"]
        names.append(f"biGRU {c['settings']['pool']}")
        means.append(100 * m["mean"])
        cis.append(100 * m.get("ci95", 0.0))
    names += ["majority", "BoW logreg"]
    means += [100 * majority, 100 * bow]
    cis += [0, 0]
    ax.bar(names, means, yerr=cis, capsize=4, color=["C0"] * (len(names) - 2) + ["C7", "C2"])
    ax.set_ylim(50, max(means) + 5)
    ax.set_ylabel("evaluation accuracy %")
    ax.set_title("Rotten Tomatoes sentiment (mean ± 95 % CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
