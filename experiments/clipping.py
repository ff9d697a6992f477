"""What gradient-norm clipping does to a diverging run (Pascanu, Mikolov & Bengio 2013, Alg. 1).

An Elman ReLU network initialised in the exploding regime (orthogonal W_rec
with gain > 1: largest Lyapunov exponent > 0, gradients growing back in time)
is trained on the adding problem with plain SGD, once without clipping and
with ``optax.clip_by_global_norm(c)`` for a few thresholds c. The same
parameters, data and step function (``rnnjax.train.make_train_step``, which
skips steps whose loss or gradients are non-finite and counts them) are used
for every threshold; only c differs (one ``jax.vmap``-ed program).

Reported per threshold: loss curve, global gradient norm per step, number of
skipped (non-finite) steps, final evaluation MSE (baseline 1/6), and the
gradient-flow profile at init (``rnnjax.gradflow``).

Usage::

    python experiments/clipping.py --out runs/clipping
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import matplotlib
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import rnnjax  # noqa: E402
from rnnjax import gradflow as gf  # noqa: E402
from rnnjax.models import for_task  # noqa: E402
from rnnjax.tasks import get_task  # noqa: E402
from rnnjax.train import TrainState, make_train_step  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    cell: str = "elman-relu"
    init_gain: float = 1.5
    seq_len: int = 20
    hidden: int = 32
    steps: int = 600
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    clips: tuple = (0.0, 10.0, 1.0)  # 0 = no clipping
    seed: int = 0


def parse() -> tuple[Config, str]:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for field in dataclasses.fields(Config):
        if field.name == "clips":
            continue
        p.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(d, field.name)),
                       default=getattr(d, field.name))
    p.add_argument("--clips", default=",".join(map(str, d.clips)))
    p.add_argument("--out", default="runs/clipping")
    a = vars(p.parse_args())
    out = a.pop("out")
    a["clips"] = tuple(float(c) for c in a["clips"].split(","))
    return Config(**a), out


def main() -> None:
    cfg, out = parse()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=1)
    task = get_task("adding", seq_len=cfg.seq_len, seed=cfg.seed)
    model = for_task(task, functools.partial(rnnjax.make_cell, cfg.cell, init_gain=cfg.init_gain), cfg.hidden)
    key = jax.random.key(cfg.seed)
    params = model.init(key)
    ev = task.eval_batch()

    # gradient flow at init on 8 evaluation sequences
    readout = rnnjax.linear(model.cell.output_size, 1)

    def profile(xs, target):
        loss_fn = lambda ys: 0.5 * jnp.sum((readout.apply(params.readout, ys[-1]) - target) ** 2)  # noqa: E731
        norms = gf.hidden_grad_norms(model.cell, params.cell, xs, loss_fn)
        return norms, gf.lyapunov_spectrum(model.cell, params.cell, xs, k=1, transient=cfg.seq_len // 5)[0]

    norms0, lam0 = jax.jit(jax.vmap(profile))(ev.inputs[:8], ev.targets[:8])
    diag = gf.recurrent_diagnostics(model.cell, params.cell)

    def train(clip):
        opt = optax.chain(optax.clip_by_global_norm(clip), optax.sgd(cfg.lr, momentum=cfg.momentum))
        step = make_train_step(model.loss, opt, has_aux=True, jit=False)
        zero = jnp.zeros((), jnp.int32)
        data_key = jax.random.fold_in(key, 1)
        state = TrainState(params, opt.init(params), zero, data_key, zero, zero)

        def one(state, _):
            batch = task.sample(jax.random.fold_in(data_key, state.step), cfg.batch_size)
            state, m = step(state, batch)
            return state, (m["loss"], m["grad_norm"], m["skipped"])

        state, (loss, gnorm, skipped) = jax.lax.scan(one, state, None, length=cfg.steps)
        return loss, gnorm, skipped, model.evaluate(state.params, ev)["loss"]

    clips = jnp.array([c if c > 0 else jnp.inf for c in cfg.clips], jnp.float32)
    loss, gnorm, skipped, mse = (np.asarray(a) for a in jax.jit(jax.vmap(train))(clips))

    def finite(x):
        x = float(x)
        return x if np.isfinite(x) else None

    results = {
        "at_init": {
            "lyapunov_max": float(np.mean(lam0)),
            "decay_rate": float(np.mean([gf.decay_rate(n) for n in norms0])),
            "first_last_ratio": float(np.exp(np.mean(np.log(np.asarray(norms0)[:, 0] / np.asarray(norms0)[:, -1])))),
            "diagnostics": gf.summary_dict(diag),
        },
        "runs": {
            ("off" if c == 0 else f"{c:g}"): {
                "eval_mse": finite(mse[i]),
                "skipped_steps": int(skipped[i].sum()),
                "grad_norm_median": finite(np.nanmedian(np.where(np.isfinite(gnorm[i]), gnorm[i], np.nan))),
                "grad_norm_max": finite(np.nanmax(np.where(np.isfinite(gnorm[i]), gnorm[i], np.nan))),
                "final_train_loss": finite(np.mean(loss[i][-20:])),
                "loss_curve": [finite(v) for v in loss[i]],
                "grad_norm_curve": [finite(v) for v in gnorm[i]],
            }
            for i, c in enumerate(cfg.clips)
        },
        "baseline_mse": 1 / 6,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"at init: lambda_max {results['at_init']['lyapunov_max']:+.3f}, "
          f"||dL/dc_0||/||dL/dc_T-1|| = {results['at_init']['first_last_ratio']:.2e}")
    for name, r in results["runs"].items():
        print(f"clip {name:>4}: eval MSE {r['eval_mse']}, skipped {r['skipped_steps']}, "
              f"grad norm median {r['grad_norm_median']}, max {r['grad_norm_max']}")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, c in enumerate(cfg.clips):
        label = "no clipping" if c == 0 else f"clip at {c:g}"
        steps = np.arange(cfg.steps)
        color = f"C{i}"
        axes[0].plot(steps, np.where(np.isfinite(loss[i]), loss[i], np.nan), color=color, label=label, lw=1)
        axes[1].plot(steps, np.where(np.isfinite(gnorm[i]), gnorm[i], np.nan), color=color, label=label, lw=1)
        bad = np.flatnonzero(skipped[i])
        if bad.size:
            axes[0].plot(bad, np.full(bad.size, 1e-3), "|", color=color, ms=6,
                         label=f"{label}: {bad.size} skipped (non-finite) steps")
    axes[0].axhline(1 / 6, color="k", ls="--", lw=0.8, label="predict-the-mean MSE 1/6")
    for ax, ylabel in zip(axes, ("training MSE", "global gradient norm (before clipping)")):
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{cfg.cell}, init gain {cfg.init_gain} (exploding regime), adding T={cfg.seq_len}, "
                 f"SGD lr {cfg.lr} momentum {cfg.momentum}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "clipping.png"), dpi=100)
    print(f"wrote {out}/config.json, results.json, clipping.png")


if __name__ == "__main__":
    main()
