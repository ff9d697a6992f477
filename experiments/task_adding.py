"""The adding problem: LSTM vs tanh RNN vs the 1/6 baseline (many-to-one regression).

Each of T steps carries a U(0, 1) value and a marker; the target is the sum of
the two marked values (Hochreiter & Schmidhuber 1997). Predicting the mean
scores MSE = 1/6. The script trains each cell in ``--cells`` with the same
budget and reports the final test MSE against the baseline. Target: the LSTM
below a tenth of the baseline (MSE < 0.0167) at T = 50, while the tanh RNN
stays near the baseline.

Run:  python experiments/task_adding.py --out runs/adding
Writes config.json, results.json and adding.png to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import time

import jax
import numpy as np

import rnnjax
from rnnjax.tasks import get_task

TASK = "adding"


@dataclasses.dataclass(frozen=True)
class Config:
    cells: str = "elman-tanh,lstm,gru"  # comma-separated rnnjax.CELLS names
    seq_len: int = 50
    hidden: int = 64
    batch_size: int = 64
    steps: int = 1500
    lr: float = 3e-3
    clip: float = 1.0
    seed: int = 0
    eval_every: int = 100
    target_fraction: float = 0.1  # success: final test loss < target_fraction * baseline


def parse_config() -> tuple[Config, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Config):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    parser.add_argument("--out", default=f"runs/{TASK}", help="output folder")
    args = vars(parser.parse_args())
    out = args.pop("out")
    return Config(**args), out


def fit(cfg: Config, task, cell: str) -> dict:
    """Train ``cell`` on ``task``; evaluate every ``eval_every`` steps. Returns the history."""
    factory = functools.partial(rnnjax.make_cell, cell)
    model = rnnjax.models.for_task(task, factory, cfg.hidden)
    optimizer = rnnjax.make_optimizer(cfg.lr, clip=cfg.clip)
    trainer = rnnjax.make_trainer(model, task, optimizer, batch_size=cfg.batch_size)
    run = jax.jit(trainer.run, static_argnums=1)
    evaluate = jax.jit(trainer.evaluate)
    state = jax.jit(trainer.init)(jax.random.key(cfg.seed))
    history = {"step": [0], "train_loss": [float("nan")], "eval_loss": [float(evaluate(state.params)["loss"])]}
    start = time.perf_counter()
    for done in range(cfg.eval_every, cfg.steps + 1, cfg.eval_every):
        state, metrics = run(state, cfg.eval_every)
        ev = evaluate(state.params)
        history["step"].append(done)
        history["train_loss"].append(float(np.mean(metrics["loss"])))
        history["eval_loss"].append(float(ev["loss"]))
        print(f"{cell:>10} step {done:5d}  train {history['train_loss'][-1]:.4f}  test {ev['loss']:.4f}", flush=True)
    history["wall_time_s"] = time.perf_counter() - start
    history["skipped_steps"] = int(state.skipped)
    return history


def plot(histories: dict, task, cfg: Config, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for cell, h in histories.items():
        ax.plot(h["step"], h["eval_loss"], label=cell)
    ax.axhline(task.baseline_loss, color="gray", ls="--", label="baseline 1/6")
    ax.axhline(cfg.target_fraction * task.baseline_loss, color="gray", ls=":", label="target")
    ax.set(xlabel="step", ylabel="test MSE", yscale="log", title=f"adding problem, T = {cfg.seq_len}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    cfg, out = parse_config()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)
    task = get_task(TASK, seq_len=cfg.seq_len, seed=cfg.seed)
    histories = {cell: fit(cfg, task, cell) for cell in cfg.cells.split(",")}
    target = cfg.target_fraction * task.baseline_loss
    results = {
        "task": TASK, "seq_len": cfg.seq_len, "baseline_loss": task.baseline_loss, "target_loss": target,
        "final_test_loss": {c: h["eval_loss"][-1] for c, h in histories.items()},
        "target_met": {c: h["eval_loss"][-1] < target for c, h in histories.items()},
        "wall_time_s": {c: h["wall_time_s"] for c, h in histories.items()},
        "history": histories,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot(histories, task, cfg, os.path.join(out, f"{TASK}.png"))
    print(f"{TASK} T={cfg.seq_len}: baseline {task.baseline_loss:.4f}, target < {target:.4f}")
    for c, h in histories.items():
        print(f"  {c:>10}: test MSE {h['eval_loss'][-1]:.5f}  ({h['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
