"""Bach chorales (music21's corpus) as piano rolls: next-frame NLL of RNN cells vs the independent-marginal baseline.

A study (``rnnjax.study.run_study``: cells × 5 seeds, mean ± 95 % CI) of the ``chorales`` task: the
Bernoulli negative log-likelihood per time step (nats, summed over the 53 pitches) on the 74 test
chorales, against the independent pitch marginals of the training frames, and next to the published
JSB Chorales figures (different preprocessing, see the table's notes).

Usage::

    python experiments/app_chorales.py --out runs/app_chorales          # the committed table and figure
    python experiments/app_chorales.py --quick --out /tmp/app_chorales  # 2 seeds, 60 steps, GRU only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys

import jax

from rnnjax import study
from rnnjax.tasks import get_task
from rnnjax.train import RunConfig

HERE = os.path.dirname(os.path.abspath(__file__))
# Test NLL per time step on JSB Chorales (quarter-note piano rolls over 88 piano keys, 229/76/77 pieces),
# as listed in ../shared/REFERENCES.md §10 (Chung et al. 2014; Boulanger-Lewandowski et al. 2012).
PUBLISHED = {"elman-tanh": 8.82, "lstm": 8.67, "gru": 8.54}


@dataclasses.dataclass(frozen=True)
class Config:
    cells: str = "elman-tanh,lstm,gru"
    hidden: int = 64
    steps: int = 400
    lr: float = 3e-3
    batch_size: int = 32
    seq_len: int = 64
    seeds: str = "0,1,2,3,4"
    table: str = os.path.join(HERE, "results", "app_chorales.md")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Config):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    if args.quick:
        values.update(cells="gru", seeds="0,1", steps=60, table=os.path.join(args.out, "app_chorales.md"))
    cfg = Config(**values)
    cells = cfg.cells.split(",")
    seeds = [int(s) for s in cfg.seeds.split(",")]
    task = get_task("chorales", seq_len=cfg.seq_len)  # parses (or reads the cache of) the corpus once
    base = RunConfig(task="chorales", cell=cells[0], hidden=cfg.hidden, steps=cfg.steps, lr=cfg.lr,
                     batch_size=cfg.batch_size, seq_len=cfg.seq_len, clip=1.0)
    res = study.run_study(base, {"cell": cells}, seeds, out=args.out, gradflow=False, method="vmap",
                          solved="loss<1*baseline", log=lambda m: print(m, file=sys.stderr, flush=True))
    info = task.info
    command = ("rnnjax study " + " ".join(base.train_argv("DIR")[1:-2]).replace(f"--cell {cells[0]}",
               f"--cells {','.join(cells)}") + f" --seeds {cfg.seeds} --vectorize --no-gradflow --out DIR")
    lines = [
        "# Bach chorales: next-frame NLL per time step vs the independent-marginal baseline",
        "",
        f"Command: `python experiments/app_chorales.py --out DIR` (= `{command}`). Data: the "
        f"{len(info['pieces'])} chorales of `music21.corpus.chorales.Iterator()` (music21 "
        f"{info['source'].split('music21 ')[-1].rstrip(')')}; split by piece {len(info['split']['train'])}/"
        f"{len(info['split']['val'])}/{len(info['split']['test'])}, fixed), quarter-note grid, MIDI pitches "
        f"{info['pitch_low']}–{info['pitch_high']} (P = {info['n_pitches']}); {info['test_frames']} test frames. "
        f"Models: {cfg.hidden} units, Adam {cfg.lr}, clip 1, batch {cfg.batch_size} random crops of "
        f"{cfg.seq_len} steps, {cfg.steps} steps, {len(seeds)} seeds (mean ± half-width of the 95 % Student-t "
        f"interval); evaluation on every test chorale whole. Machine: {platform.node()} ({os.cpu_count()} CPUs, "
        f"shared with other jobs), jax {jax.__version__}; study wall time {res.timing['total_s'] / 60:.1f} min.",
        "",
        "| model | test NLL per step (nats) | below the marginal baseline? | published JSB test NLL |",
        "|---|---|---|---|",
        f"| independent pitch marginals (KT-smoothed, training frames) | {task.baseline_loss:.3f} | — | — |",
    ]
    rows = []
    for entry in res.configurations:
        cell = entry["settings"]["cell"]
        m = entry["metrics"]["eval_loss"]
        ci = "" if m["ci95"] is None else f" ± {m['ci95']:.3f}"
        rows.append((cell, m))
        lines.append(f"| {cell} {cfg.hidden} | **{m['mean']:.3f}{ci}** | "
                     f"{'yes' if m['high'] is not None and m['high'] < task.baseline_loss else 'no'} "
                     f"({entry['solved_fraction'] * 100:.0f} % of seeds) | {PUBLISHED.get(cell, '—')} |")
    lines += [
        "",
        "Not the same numbers as the published ones: JSB Chorales (Boulanger-Lewandowski et al. 2012) has 382 "
        "chorales in 229/76/77 pieces over the 88 piano keys; here 371 chorales from music21's corpus in a "
        "different random split over the 53 pitches they use, sampled by us on a quarter-note grid (notes "
        "sounding at each beat), with the first frame of each piece not scored (the models predict frame t + 1 "
        "from frames ≤ t). The published models were trained to convergence (thousands of epochs with early "
        "stopping); these train "
        f"{cfg.steps} steps of {cfg.batch_size} crops. Per-pitch NLL terms of the 35 keys outside the "
        "corpus range would add (almost) zero for a trained model, so the pitch-range difference matters little.",
        "",
        "![test NLL](app_chorales.png)",
        "",
        "Training loss per cell (mean and 95 % band over seeds): ![learning curves](app_chorales_curves.png)",
        "",
    ]
    os.makedirs(os.path.dirname(cfg.table), exist_ok=True)
    with open(cfg.table, "w") as f:
        f.write("\n".join(lines))
    stem = os.path.splitext(cfg.table)[0]
    with open(stem + ".json", "w") as f:
        json.dump({"config": dataclasses.asdict(cfg), "baseline": task.baseline_loss, "published": PUBLISHED,
                   "rows": {c: m for c, m in rows}, "timing": res.timing}, f, indent=1, default=float)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    x = range(len(rows))
    ax.bar(x, [m["mean"] for _, m in rows], yerr=[m["ci95"] or 0 for _, m in rows], color="0.6", capsize=4,
           label=f"ours ({len(seeds)} seeds, 95 % CI)")
    ax.scatter([i for i, (c, _) in enumerate(rows) if c in PUBLISHED], [PUBLISHED[c] for c, _ in rows
               if c in PUBLISHED], marker="x", color="r", zorder=3, label="published JSB (other preprocessing)")
    ax.axhline(task.baseline_loss, color="k", linestyle="--", label="independent marginals")
    ax.set_xticks(list(x), [c for c, _ in rows])
    ax.set_ylabel("test NLL per step (nats)")
    ax.set_ylim(0, task.baseline_loss * 1.2)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=110)
    plt.close(fig)
    curves = os.path.join(args.out, "learning_curves.png")
    if os.path.exists(curves):
        shutil.copy(curves, stem + "_curves.png")
    print(open(cfg.table).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
