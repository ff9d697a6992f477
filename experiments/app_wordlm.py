"""Next-word prediction on Shakespeare: an LSTM word-level language model against the unigram and an
interpolated Kneser–Ney bigram counted on the same split (the last 10 % of the tokens held out).

Five seeds on the study engine (``rnnjax.study.run_study``, truncated BPTT with the state carried
across batches); perplexity ``exp(loss)`` per seed, mean ± 95 % CI. Writes
``experiments/results/app_wordlm.{md,json,png}``.

Usage::

    python experiments/app_wordlm.py --out runs/app_wordlm             # the committed table (~25 min, 2-core CPU)
    python experiments/app_wordlm.py --out /tmp/w --steps 20 --seeds 0,1 --table /tmp/w/t.md   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

from rnnjax import study
from rnnjax.tasks import get_task
from rnnjax.train import RunConfig

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Config:
    vocab_size: int = 5000
    cell: str = "lstm"
    hidden: int = 128
    embed: int = 64
    seq_len: int = 35
    batch_size: int = 32
    steps: int = 300
    lr: float = 3e-3
    eval_size: int = 64
    eval_seq_len: int = 256
    seeds: str = "0,1,2,3,4"


def main(argv=None) -> int:
    cfg = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(cfg):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--out", required=True)
    p.add_argument("--table", default=os.path.join(HERE, "results", "app_wordlm.md"))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    options = tuple(sorted({"vocab_size": args.vocab_size, "eval_size": args.eval_size,
                            "eval_seq_len": args.eval_seq_len}.items()))
    base = RunConfig(task="wordlm", cell=args.cell, hidden=args.hidden, embed=args.embed, seq_len=args.seq_len,
                     tbptt=args.seq_len, batch_size=args.batch_size, steps=args.steps, lr=args.lr,
                     task_options=options)
    t0 = time.perf_counter()
    result = study.run_study(base, {}, seeds, out=args.out, gradflow=False,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    task = get_task("wordlm", seq_len=args.seq_len, **dict(options))
    info = task.info
    conf = result.configurations[0]
    losses = conf["metrics"]["eval_loss"]
    ppl = study.interval([math.exp(v) for v in losses["values"]])
    uni, bi = info["eval_unigram_perplexity"], info["eval_bigram_perplexity"]
    ci = ppl.get("ci95", float("nan"))
    lines = [
        "# Next-word prediction: Shakespeare (shksprdata, 42 plays)",
        "",
        f"Tokens: lower-cased words and punctuation; {info['train_tokens']:,} training tokens (first 90 %), "
        f"evaluation on the first {info['eval_tokens']:,} held-out tokens ({args.eval_size} windows of "
        f"{args.eval_seq_len}); vocabulary: the {args.vocab_size} most frequent training tokens + `<unk>` "
        f"({100 * info['unk_rate_eval']:.1f} % of the evaluation targets are `<unk>`, for every model alike). All "
        "rows are scored on exactly these targets.",
        "",
        "| model | perplexity (mean ± 95 % CI) | cross-entropy (nats) | budget |",
        "|---|---|---|---|",
        f"| {args.cell.upper()} H={args.hidden}, E={args.embed}, truncated BPTT {args.seq_len} | {ppl['mean']:.1f} ± "
        f"{ci:.1f} | {losses['mean']:.3f} ± {losses.get('ci95', float('nan')):.3f} | {len(losses['values'])} seeds, "
        f"{args.steps} steps × {args.batch_size} × {args.seq_len} tokens |",
        f"| unigram (maximum likelihood) | {uni:.1f} | {math.log(uni):.3f} | counts |",
        f"| bigram, interpolated Kneser–Ney (d = 0.75) | {bi:.1f} | {math.log(bi):.3f} | counts |",
        "",
        f"Target: below the bigram perplexity: {ppl['mean']:.1f} vs {bi:.1f} "
        f"({100 * (ppl['mean'] / bi - 1):+.1f} %) — {'met' if ppl.get('high', ppl['mean']) < bi else 'missed'}.",
        "",
        f"Budget: {args.steps} Adam steps (lr {args.lr:g}, clip 1) per seed, "
        f"{args.steps * args.batch_size * args.seq_len:,}"
        f" training tokens seen (~{args.steps * args.batch_size * args.seq_len / info['train_tokens']:.2f} epochs); "
        f"wall time {wall / 60:.1f} min for {len(seeds)} runs, compilation included, on a 2-core CPU shared with "
        "other jobs.",
        "",
        f"Command: `python experiments/app_wordlm.py --steps {args.steps} --out DIR` (equivalently "
        f"`rnnjax study --task wordlm --cell "
        f"{args.cell} --hidden {args.hidden} --embed {args.embed} --seq-len {args.seq_len} --tbptt {args.seq_len} "
        f"--batch-size {args.batch_size} --steps {args.steps} --lr {args.lr:g} --task-option vocab_size="
        f"{args.vocab_size} --task-option eval_size={args.eval_size} --task-option eval_seq_len={args.eval_seq_len} "
        f"--seeds {args.seeds} --no-gradflow --out DIR`); sample text: `rnnjax sample --out RUN --prime 'romeo :' "
        "--length 40`.",
        "",
        "Per-seed perplexities: " + ", ".join(f"{math.exp(v):.1f}" for v in losses["values"]),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.table), exist_ok=True)
    with open(args.table, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.table)[0] + ".json", "w") as f:
        json.dump({"config": {k: getattr(args, k) for k in cfg.__dict__}, "perplexity": ppl, "loss": losses,
                   "unigram_perplexity": uni, "bigram_perplexity": bi, "wall_s": wall,
                   "curve": conf["runs"][0].get("curve")}, f, indent=1)
    _figure(conf, uni, bi, os.path.splitext(args.table)[0] + ".png")
    return 0


def _figure(conf, uni, bi, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for r in conf["runs"]:
        curve = r.get("curve") or []
        if curve:
            ax.plot([c[0] for c in curve], [math.exp(c[1]) for c in curve], color="C0", alpha=0.6, lw=1)
    ax.axhline(uni, color="C7", ls="--", label=f"unigram {uni:.0f}")
    ax.axhline(bi, color="C2", ls="--", label=f"KN bigram {bi:.0f}")
    for v in conf["metrics"]["eval_loss"]["values"]:
        ax.plot([conf["runs"][0]["curve"][-1][0]], [math.exp(v)], "o", color="C3", ms=4)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("perplexity (train curve; dots: held out)")
    ax.set_title("Shakespeare word LM, 5 seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
