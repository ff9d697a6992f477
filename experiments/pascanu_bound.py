"""Pascanu's bound: ||dL/dh_t|| <= (gamma sigma_max)^{T-t} ||dL/dh_T|| for an Elman network.

Each step Jacobian is ``diag(phi'(a_t)) W_rec`` with ``|phi'| <= gamma``, so the
gradient can grow at most by ``gamma * sigma_max(W_rec)`` per step back in time:
``sigma_max < 1/gamma`` is *sufficient* for vanishing and ``sigma_max > 1/gamma``
*necessary* for exploding (Pascanu, Mikolov & Bengio, ICML 2013, Sec. 3.1).

For tanh, ReLU and linear Elman networks with random recurrent matrices rescaled
to a given sigma_max, this script measures, from ``rnnjax.gradflow.hidden_grad_norms``,
the worst per-step growth ``max_t log(||dL/dh_t|| / ||dL/dh_T||) / (T - t)`` and
checks it never exceeds ``log(gamma sigma_max)`` (the bound), with the bound value
from ``rnnjax.gradflow.recurrent_diagnostics``. The plot shows where the bound is
tight (linear networks with a near-normal matrix) and where it is far from tight
(tanh saturation: sigma_max > 1 does not imply exploding).

Usage::

    python experiments/pascanu_bound.py --out runs/pascanu_bound
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
    activations: tuple = ("linear", "tanh", "relu")
    sigmas: tuple = (0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)
    hidden: int = 64
    seq_len: int = 60
    seeds: int = 4
    input_scale: float = 1.0


def parse() -> tuple[Config, str]:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sigmas", default=",".join(map(str, d.sigmas)))
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--out", default="runs/pascanu_bound")
    a = p.parse_args()
    cfg = dataclasses.replace(d, sigmas=tuple(float(s) for s in a.sigmas.split(",")), hidden=a.hidden,
                              seq_len=a.seq_len, seeds=a.seeds)
    return cfg, a.out


def main() -> None:
    cfg, out = parse()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=1)
    T = cfg.seq_len
    steps_back = T - np.arange(T)  # T - t
    results = {}
    fig, ax = plt.subplots(figsize=(5.4, 3.9))
    markers = {"linear": "s", "tanh": "o", "relu": "^"}
    for act in cfg.activations:
        rows = []
        # one cell per activation (one compilation); W_rec rescaled to each sigma_max, as
        # rnnjax.initializers.max_singular_value does
        cell = rnnjax.elman(2, cfg.hidden, activation=act, dtype=jnp.float64)
        for sigma in cfg.sigmas:
            for seed in range(cfg.seeds):
                k_p, k_x, k_w = jax.random.split(jax.random.key(seed), 3)
                params = cell.init(k_p)
                w_rec = rnnjax.initializers.max_singular_value(sigma)(k_p, params.w_rec.shape, jnp.float64)
                params = params._replace(w_rec=w_rec)
                diag = gf.recurrent_diagnostics(cell, params)
                xs = cfg.input_scale * jax.random.normal(k_x, (T, 2), jnp.float64)
                w = jax.random.normal(k_w, (cfg.hidden,), jnp.float64)
                norms = np.asarray(gf.hidden_grad_norms(cell, params, xs, lambda ys: w @ ys[-1]))
                # dL/dh_T = w (the loss is linear in y_{T-1} = h_T); growth of t relative to T
                with np.errstate(divide="ignore"):
                    growth = np.log(norms / np.linalg.norm(np.asarray(w))) / steps_back
                worst = float(np.max(growth[np.isfinite(growth)])) if np.any(np.isfinite(growth)) else float("-inf")
                bound = float(np.log(diag.pascanu_bound))
                rows.append({
                    "sigma_max": diag.sigma_max,
                    "gamma": diag.blocks[0].gamma,
                    "pascanu_bound": diag.pascanu_bound,
                    "spectral_radius": diag.spectral_radius,
                    "log_bound": bound,
                    "worst_growth_per_step": worst,
                    "decay_rate": float(gf.decay_rate(jnp.asarray(norms))),
                    "bound_holds": bool(worst <= bound + 1e-9),
                    "seed": seed,
                })
        results[act] = rows
        x = [r["log_bound"] for r in rows]
        y = [max(r["worst_growth_per_step"], -3.0) for r in rows]
        ax.scatter(x, y, marker=markers.get(act, "o"), s=16, label=f"{act} Elman", alpha=0.8)
        held = all(r["bound_holds"] for r in rows)
        print(f"{act}: bound holds in {sum(r['bound_holds'] for r in rows)}/{len(rows)} runs ({'OK' if held else 'VIOLATED'})")
    lo = min(np.log(cfg.sigmas)) - 0.1
    hi = max(np.log(cfg.sigmas)) + 0.1
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label=r"bound: $\log(\gamma\,\sigma_{max})$")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel(r"$\log(\gamma\,\sigma_{max}(W_{rec}))$  (Pascanu's bound per step)")
    ax.set_ylabel(r"measured worst growth $\max_t \frac{1}{T-t}\log\frac{\|\partial L/\partial h_t\|}{\|\partial L/\partial h_T\|}$",
                  fontsize=8)
    ax.set_title(f"gradient growth never exceeds Pascanu's bound (T={T}, H={cfg.hidden})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "pascanu_bound.png"), dpi=100)
    summary = {act: {"bound_holds_all": all(r["bound_holds"] for r in rows), "runs": len(rows)}
               for act, rows in results.items()}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"summary": summary, "runs": results}, f, indent=1)
    print(f"wrote {out}/config.json, results.json, pascanu_bound.png")


if __name__ == "__main__":
    main()
