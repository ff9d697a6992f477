"""The linear closed form: a linear Elman network with W_rec = g Q (Q orthogonal).

With h_{t+1} = W_rec h_t + W_in x_t and a loss on the last output,
``dL/dh_t = (W_rec^T)^{T-t} dL/dh_T``, so ``||dL/dh_t|| = g^{T-t} ||dL/dy_{T-1}||``
exactly, and every Lyapunov exponent equals ``log g``. This script measures both
with ``rnnjax.gradflow`` in float64 and reports the largest deviations.

Usage::

    python experiments/linear_closed_form.py --out runs/linear_closed_form
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import rnnjax  # noqa: E402
from rnnjax import gradflow as gf  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    gains: tuple = (0.8, 0.9, 1.0, 1.1, 1.2)
    hidden: int = 32
    input_size: int = 2
    seq_len: int = 60
    seed: int = 0


def parse() -> tuple[Config, str]:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gains", default=",".join(map(str, d.gains)))
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default="runs/linear_closed_form")
    a = p.parse_args()
    cfg = dataclasses.replace(d, gains=tuple(float(g) for g in a.gains.split(",")), hidden=a.hidden,
                              seq_len=a.seq_len, seed=a.seed)
    return cfg, a.out


def main() -> None:
    cfg, out = parse()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=1)
    key_p, key_x, key_w = jax.random.split(jax.random.key(cfg.seed), 3)
    xs = jax.random.normal(key_x, (cfg.seq_len, cfg.input_size), jnp.float64)
    target = jax.random.normal(key_w, (cfg.hidden,), jnp.float64)
    loss_fn = lambda ys: 0.5 * jnp.sum((ys[-1] - target) ** 2)  # noqa: E731
    t = np.arange(cfg.seq_len)
    results, curves = {}, {}
    for g in cfg.gains:
        cell = rnnjax.elman(cfg.input_size, cfg.hidden, activation="linear",
                            rec_init=rnnjax.initializers.orthogonal(g), dtype=jnp.float64)
        params = cell.init(key_p)
        norms = np.asarray(gf.hidden_grad_norms(cell, params, xs, loss_fn))
        _, ys = rnnjax.unroll(cell, params, xs)
        dl_dy = np.linalg.norm(np.asarray(ys[-1] - target))  # dL/dy_{T-1} of the loss above
        closed = g ** (cfg.seq_len - t) * dl_dy
        exps = np.asarray(gf.lyapunov_spectrum(cell, params, xs))
        results[f"{g:g}"] = {
            "max_rel_error_grad_norms": float(np.max(np.abs(norms - closed) / closed)),
            "max_abs_error_lyapunov": float(np.max(np.abs(exps - np.log(g)))),
            "decay_rate": float(gf.decay_rate(jnp.asarray(norms))),
            "expected_decay_rate": float(-np.log(g)),
            "lyapunov_max": float(exps[0]),
            "lyapunov_min": float(exps[-1]),
            "log_g": float(np.log(g)),
        }
        curves[g] = (norms, closed)
        print(f"g={g:g}: max rel. error of ||dL/dc_t|| {results[f'{g:g}']['max_rel_error_grad_norms']:.1e}, "
              f"max |lambda_i - log g| {results[f'{g:g}']['max_abs_error_lyapunov']:.1e}")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    cmap = plt.get_cmap("coolwarm")
    for i, (g, (norms, closed)) in enumerate(curves.items()):
        color = cmap(i / max(len(curves) - 1, 1))
        ax.plot(t, closed, color=color, lw=1.5, label=f"g = {g:g}: $g^{{T-t}}\\|\\partial L/\\partial y_{{T-1}}\\|$")
        ax.plot(t[::4], norms[::4], "o", color=color, ms=3.5, mfc="none")
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel(r"$\|\partial L/\partial h_t\|$ (circles: hidden_grad_norms)")
    ax.set_title(f"linear RNN, W = gQ: measured vs closed form (T={cfg.seq_len}, float64)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "linear_closed_form.png"), dpi=100)
    print(f"wrote {out}/config.json, results.json, linear_closed_form.png")


if __name__ == "__main__":
    main()
