"""One-step forecasting of noisy sums of sines with a GRU (many-to-many regression).

Each sequence is a sum of 3 sinusoids with random amplitudes, frequencies and
phases, observed with Gaussian noise (sd 0.1); at every step the network
predicts the clean next value. The baseline predicts the last observation
(closed-form MSE ~0.067 for the defaults). Target: test MSE below a quarter of
that baseline.

Run:  python experiments/task_sines.py --out runs/sines
Writes config.json, results.json and sines.png to --out.
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

TASK = "sines"


@dataclasses.dataclass(frozen=True)
class Config:
    cell: str = "gru"
    hidden: int = 64
    seq_len: int = 100
    batch_size: int = 32
    steps: int = 2000
    lr: float = 3e-3
    clip: float = 1.0
    seed: int = 0
    eval_every: int = 100
    target_fraction: float = 0.25  # success: test MSE < target_fraction * baseline


def parse_config() -> tuple[Config, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Config):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    parser.add_argument("--out", default=f"runs/{TASK}", help="output folder")
    args = vars(parser.parse_args())
    out = args.pop("out")
    return Config(**args), out


def fit(cfg: Config, task) -> tuple[dict, object, object]:
    """Train; evaluate every ``eval_every`` steps. Returns (history, model, params)."""
    factory = functools.partial(rnnjax.make_cell, cfg.cell)
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
        print(f"step {done:5d}  train {history['train_loss'][-1]:.5f}  test {ev['loss']:.5f}", flush=True)
    history["wall_time_s"] = time.perf_counter() - start
    history["skipped_steps"] = int(state.skipped)
    return history, model, state.params


def plot(history: dict, task, cfg: Config, model, params, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = task.eval_batch()
    pred = np.asarray(model.apply(params, test.inputs[:1]))
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3), dpi=100)
    a.plot(history["step"], history["eval_loss"], label="test")
    a.axhline(task.baseline_loss, color="gray", ls="--", label="baseline: last value")
    a.axhline(cfg.target_fraction * task.baseline_loss, color="gray", ls=":", label="target")
    a.set(xlabel="step", ylabel="MSE", yscale="log", title=f"sines forecasting, {cfg.cell}")
    a.legend(fontsize=8)
    t = np.arange(1, cfg.seq_len + 1)
    b.plot(t, np.asarray(test.inputs[0, :, 0]), ".", ms=3, color="gray", label="observed x_t (shifted)")
    b.plot(t, np.asarray(test.targets[0, :, 0]), lw=3, alpha=0.3, label="clean s_{t+1}")
    b.plot(t, pred[0, :, 0], lw=1, label="forecast")
    b.set(xlabel="t + 1", ylabel="value", title="one test sequence")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    cfg, out = parse_config()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)
    task = get_task(TASK, seq_len=cfg.seq_len, seed=cfg.seed)
    history, model, params = fit(cfg, task)
    final = history["eval_loss"][-1]
    results = {
        "task": TASK, "cell": cfg.cell, "test_loss": final, "baseline_loss": task.baseline_loss,
        "target_loss": cfg.target_fraction * task.baseline_loss,
        "target_met": final < cfg.target_fraction * task.baseline_loss,
        "wall_time_s": history["wall_time_s"], "history": history,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot(history, task, cfg, model, params, os.path.join(out, f"{TASK}.png"))
    print(f"{TASK} {cfg.cell}: test MSE {final:.5f} (last-value baseline {task.baseline_loss:.5f}, target < "
          f"{cfg.target_fraction * task.baseline_loss:.5f}) "
          f"in {history['wall_time_s']:.0f} s")


if __name__ == "__main__":
    main()
