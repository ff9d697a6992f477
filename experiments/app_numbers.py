"""Translating numbers from digits into French (or English) words: the plain encoder–decoder against
the one with Luong attention, overall and as the input grows (number of digits).

Numbers up to 999,999 with digit counts drawn uniformly (``count`` of them), 20 % held out, so every
evaluated number is unseen. Five seeds per decoder, trained together by the study engine's sweep
(``rnnjax.sweep.run_sweep``; the per-length exact-sequence accuracy needs each run's final
parameters, which ``run_study`` does not keep); intervals from ``rnnjax.study.interval``.
Writes ``experiments/results/app_numbers.{md,json,png}``.

Usage::

    python experiments/app_numbers.py                 # the committed table (~25 min, 2-core CPU)
    python experiments/app_numbers.py --steps 50 --seeds 0,1 --table /tmp/n.md   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np

from rnnjax import study, sweep
from rnnjax.train import RunConfig, build

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Config:
    lang: str = "fr"
    max_number: int = 999_999
    count: int = 20_000
    cell: str = "gru"
    hidden: int = 64
    batch_size: int = 64
    steps: int = 800
    lr: float = 3e-3
    seeds: str = "0,1,2,3,4"


def main(argv=None) -> int:
    cfg = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(cfg):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--table", default=os.path.join(HERE, "results", "app_numbers.md"))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    options = tuple(sorted({"lang": args.lang, "max_number": args.max_number, "count": args.count}.items()))
    per_variant = {}
    total_s = 0.0
    for attention in (False, True):
        configs = [RunConfig(task="numbers", cell=args.cell, hidden=args.hidden, batch_size=args.batch_size,
                             steps=args.steps, lr=args.lr, attention=attention, seed=s, task_options=options)
                   for s in seeds]
        t0 = time.perf_counter()
        res = sweep.run_sweep(configs, log=lambda m: print(m, file=sys.stderr, flush=True))
        total_s += time.perf_counter() - t0
        trainer = build(configs[0])
        task = trainer.task
        ev = task.eval_batch()
        digits = np.asarray(task.info["eval_digits"])
        evaluate = jax.jit(trainer.evaluate)
        runs = []
        for i in range(len(seeds)):
            params = jax.tree.map(lambda x, i=i: x[i], res.states.params)
            whole = jax.device_get(evaluate(params, ev))
            by_len = {}
            for d in sorted(set(digits.tolist())):
                idx = np.flatnonzero(digits == d)
                part = jax.tree.map(lambda a, idx=idx: a[idx], ev)
                by_len[d] = float(jax.device_get(evaluate(params, part))["sequence_accuracy"])
            runs.append({"seed": seeds[i], "loss": float(whole["loss"]), "token_accuracy": float(whole["accuracy"]),
                         "sequence_accuracy": float(whole["sequence_accuracy"]), "by_digits": by_len})
        per_variant[attention] = runs
        print(f"attention={attention}: {runs}", file=sys.stderr, flush=True)

    lengths = sorted({d for runs in per_variant.values() for d in runs[0]["by_digits"]})
    counts = {d: int((digits == d).sum()) for d in lengths}
    name = {False: "plain encoder–decoder", True: "+ Luong attention"}
    pct = lambda iv: f"{100 * iv['mean']:.1f} ± {100 * iv.get('ci95', float('nan')):.1f}"  # noqa: E731
    lines = [
        f"# Numbers → words ({args.lang}): plain encoder–decoder vs Luong attention",
        "",
        f"{args.count} numbers ≤ {args.max_number:,} (digit counts drawn uniformly), {len(digits)} held out "
        f"(unseen in training); target vocabulary {task.output_size} (words, hyphens, `<eos>`), targets up to "
        f"{task.info['max_target_len']} tokens. {args.cell.upper()} H={args.hidden}, {args.steps} Adam steps × "
        f"batch {args.batch_size} (lr {args.lr:g}, clip 1), {len(seeds)} seeds each; greedy decoding. Uniform "
        f"baseline: cross-entropy {task.baseline_loss:.3f}, token accuracy {100 / task.output_size:.1f} %, "
        "exact sequences 0 %.",
        "",
        "| decoder | exact sequences % | token accuracy % | cross-entropy (teacher forced) |",
        "|---|---|---|---|",
    ]
    summary = {}
    for att, runs in per_variant.items():
        seq = study.interval([r["sequence_accuracy"] for r in runs])
        tok = study.interval([r["token_accuracy"] for r in runs])
        loss = study.interval([r["loss"] for r in runs])
        summary[att] = {"sequence_accuracy": seq, "token_accuracy": tok, "loss": loss,
                        "by_digits": {d: study.interval([r["by_digits"][d] for r in runs]) for d in lengths}}
        lines.append(f"| {name[att]} | {pct(seq)} | {pct(tok)} | {loss['mean']:.4f} ± {loss.get('ci95', 0):.4f} |")
    lines += ["", "Exact sequences % by number of digits (mean ± 95 % CI over seeds):", "",
              "| digits | held-out numbers | " + " | ".join(name[a] for a in per_variant) + " |",
              "|---|---|" + "---|" * len(per_variant)]
    for d in lengths:
        cells = " | ".join(pct(summary[a]["by_digits"][d]) for a in per_variant)
        lines.append(f"| {d} | {counts[d]} | {cells} |")
    met = summary[True]["sequence_accuracy"]["mean"] >= 0.95
    lines += ["", f"Target ≥ 95 % exact sequences with attention: {pct(summary[True]['sequence_accuracy'])} % — "
              f"{'met' if met else 'missed'}.", "",
              f"Wall time {total_s / 60:.1f} min for {2 * len(seeds)} runs (compilation included), 2-core CPU shared "
              "with other jobs.", "",
              "Command: `python experiments/app_numbers.py`; one run: `rnnjax train --task numbers --cell "
              f"{args.cell} --hidden {args.hidden} --steps {args.steps} --lr {args.lr:g} --attention --task-option "
              f"lang={args.lang} --task-option max_number={args.max_number} --task-option count={args.count} "
              "--out DIR`."]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.table), exist_ok=True)
    with open(args.table, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.table)[0] + ".json", "w") as f:
        json.dump({"config": {k: getattr(args, k) for k in cfg.__dict__},
                   "runs": {str(a): r for a, r in per_variant.items()},
                   "summary": {str(a): s for a, s in summary.items()}, "wall_s": total_s}, f, indent=1)
    _figure(summary, lengths, name, os.path.splitext(args.table)[0] + ".png")
    return 0


def _figure(summary, lengths, name, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for att, s in summary.items():
        m = np.array([100 * s["by_digits"][d]["mean"] for d in lengths])
        ci = np.array([100 * s["by_digits"][d].get("ci95", 0.0) for d in lengths])
        ax.errorbar(lengths, m, yerr=ci, marker="o", capsize=3, label=name[att])
    ax.set_xlabel("digits in the number")
    ax.set_ylabel("exact sequences % (held out)")
    ax.set_title("numbers → words (mean ± 95 % CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
