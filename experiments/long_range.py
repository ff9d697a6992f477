"""Adding problem at T >= 1000: LRU and minGRU learn it, the tanh RNN does not.

Every model is the same stack: a per-step encoder ``u_t = relu(W_e x_t + b_e)``
(so that a linear recurrence can form ``value * marker``), a recurrent cell
over the sequence, and a linear readout of its last output. Only the cell
changes: ``"lru"`` and ``"mingru"`` run with ``method="associative"``
(parallel over time), ``"elman-tanh"`` with the sequential scan. Trained
with Adam and global-norm clipping on fresh batches of the adding task
(``rnnjax.tasks.get_task("adding", seq_len=T)``); evaluated on its fixed
evaluation set. Baseline (predict the mean): MSE 1/6 = 0.167.

Run:  python experiments/long_range.py --out runs/long_range
Writes config.json, results.json and long_range.png to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
import rnnjax.train
from rnnjax.tasks import get_task


@dataclasses.dataclass(frozen=True)
class Config:
    cells: str = "mingru,lru,elman-tanh"
    seq_len: int = 1000
    hidden: int = 32
    encoder: int = 16
    batch_size: int = 16
    steps: int = 1500
    lr: float = 2e-3
    clip: float = 1.0
    seed: int = 0
    eval_every: int = 50
    eval_size: int = 256
    solved_mse: float = 0.01
    # Long-memory initialisations. Adding needs near-integrators: |lambda| ~ 1 and a phase small enough
    # that a value stored up to T steps earlier is not rotated out of the readout (theta * T << 1).
    lru_r_min: float = 0.999
    lru_r_max: float = 0.9999
    lru_max_phase: float = 1e-3
    mingru_init_gain: float = 100.0  # update-gate bias -log(100): retention 100/101 per step at init


class Params(NamedTuple):
    encoder: Any
    cell: Any
    readout: Any


def parse_config() -> tuple[Config, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Config):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    parser.add_argument("--out", default="runs/long_range", help="output folder")
    args = vars(parser.parse_args())
    out = args.pop("out")
    return Config(**args), out


def build(cfg: Config, name: str, input_size: int):
    """``(init, loss)`` of encoder -> cell -> linear readout of the last output."""
    encoder = rnnjax.linear(input_size, cfg.encoder)
    if name == "lru":
        cell = rnnjax.lru(cfg.encoder, cfg.hidden, r_min=cfg.lru_r_min, r_max=cfg.lru_r_max, max_phase=cfg.lru_max_phase)
    elif name == "mingru":
        cell = rnnjax.make_cell(name, cfg.encoder, cfg.hidden, init_gain=cfg.mingru_init_gain)
    else:
        cell = rnnjax.make_cell(name, cfg.encoder, cfg.hidden)
    readout = rnnjax.linear(cell.output_size, 1)
    method = "associative" if cell.linear_recurrence is not None else "scan"

    def init(key):
        k_e, k_c, k_r = jax.random.split(key, 3)
        return Params(encoder.init(k_e), cell.init(k_c), readout.init(k_r))

    def predict(params, inputs):
        u = jax.nn.relu(encoder.apply(params.encoder, inputs))  # (B, T, E)
        _, ys = rnnjax.unroll_batch(cell, params.cell, u, method=method)
        return readout.apply(params.readout, ys[:, -1])  # (B, 1)

    def loss(params, batch):
        mse = jnp.mean((predict(params, batch.inputs) - batch.targets) ** 2)
        return mse, {"mse": mse}

    return init, loss, method


def fit(cfg: Config, task, name: str) -> dict:
    init, loss, method = build(cfg, name, task.input_size)
    optimizer = rnnjax.train.make_optimizer(cfg.lr, clip=cfg.clip)
    train_step = rnnjax.train.make_train_step(loss, optimizer, has_aux=True)
    key = jax.random.fold_in(jax.random.key(cfg.seed), sum(map(ord, name)))
    k_init, k_data = jax.random.split(key)
    params = init(k_init)
    zero = jnp.zeros((), jnp.int32)
    state = rnnjax.train.TrainState(params, optimizer.init(params), zero, k_data, zero, zero, None, None)
    eval_batch = task.eval_batch()
    eval_batch = eval_batch._replace(inputs=eval_batch.inputs[: cfg.eval_size], targets=eval_batch.targets[: cfg.eval_size])
    evaluate = jax.jit(lambda p: loss(p, eval_batch)[0])
    history = {"step": [], "eval_mse": [], "train_mse": []}
    t0 = time.perf_counter()
    train_mse = []
    for s in range(cfg.steps + 1):
        if s % cfg.eval_every == 0:
            history["step"].append(s)
            history["eval_mse"].append(float(evaluate(state.params)))
            history["train_mse"].append(float(np.mean(train_mse)) if train_mse else None)
            train_mse = []
            print(f"{name:>10} step {s:5d}  eval MSE {history['eval_mse'][-1]:.4f}  ({time.perf_counter() - t0:.0f}s)",
                  flush=True)
        if s == cfg.steps:
            break
        batch = task.sample(jax.random.fold_in(k_data, s), cfg.batch_size)
        state, metrics = train_step(state, batch)
        train_mse.append(float(metrics["mse"]))
    final = history["eval_mse"][-1]
    return dict(cell=name, method=method, history=history, final_eval_mse=final, best_eval_mse=min(history["eval_mse"]),
                solved=bool(final < cfg.solved_mse), skipped_steps=int(state.skipped),
                seconds=time.perf_counter() - t0)


def plot(results, cfg, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in results:
        ax.plot(r["history"]["step"], r["history"]["eval_mse"], marker="o", ms=3, label=f"{r['cell']} ({r['method']})")
    ax.axhline(1 / 6, color="gray", ls="--", lw=1, label="baseline 1/6")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("eval MSE")
    ax.set_title(f"Adding problem, T = {cfg.seq_len}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    cfg, out = parse_config()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=1)
    task = get_task("adding", seq_len=cfg.seq_len, seed=cfg.seed)
    results = []
    for name in cfg.cells.split(","):
        results.append(fit(cfg, task, name))
        # Written after every model, so a long run can be inspected (or cut short) midway.
        summary = {r["cell"]: {k: r[k] for k in ("method", "final_eval_mse", "best_eval_mse", "solved", "seconds")}
                   for r in results}
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(dict(config=dataclasses.asdict(cfg), summary=summary, runs=results, jax=jax.__version__,
                           baseline_mse=1 / 6), f, indent=1)
        plot(results, cfg, os.path.join(out, "long_range.png"))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
