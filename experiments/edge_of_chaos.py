"""The edge of chaos: a random tanh network h' = tanh(W h) with W_ij ~ N(0, g^2/N).

Mean-field theory (Sompolinsky, Crisanti & Sommers 1988) predicts an ordered
phase (the state decays to the fixed point h = 0; largest Lyapunov exponent
lambda_max = log g < 0) for g < 1 and a chaotic phase (lambda_max > 0) for g > 1.
This script estimates lambda_max with ``rnnjax.gradflow.lyapunov_spectrum`` (QR
method) for a range of gains and seeds, from a random initial state with zero
input, and locates the crossing of zero. It also reports, for each g, the
per-step decay rate of the gradient of a loss on the last state (``-lambda_max``
in the ordered phase).

Usage::

    python experiments/edge_of_chaos.py --out runs/edge_of_chaos
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import rnnjax  # noqa: E402
from rnnjax import gradflow as gf  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: int = 200
    g_min: float = 0.5
    g_max: float = 2.5
    num_gains: int = 21
    seeds: int = 3
    seq_len: int = 600
    transient: int = 200
    k: int = 4  # exponents per network


def parse() -> tuple[Config, str]:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for field in dataclasses.fields(Config):
        p.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(d, field.name)),
                       default=getattr(d, field.name))
    p.add_argument("--out", default="runs/edge_of_chaos")
    a = vars(p.parse_args())
    out = a.pop("out")
    return Config(**a), out


def main() -> None:
    cfg, out = parse()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=1)
    gains = np.linspace(cfg.g_min, cfg.g_max, cfg.num_gains)
    n = cfg.hidden
    # Autonomous network: the input weights are zero and the inputs are zero.
    base = rnnjax.elman(1, n, activation="tanh", rec_init=rnnjax.initializers.random_gain(1.0),
                        in_init=rnnjax.initializers.zeros())
    xs = jnp.zeros((cfg.seq_len, 1))

    def measure(g, key):
        k_p, k_h = jax.random.split(key)
        p = base.init(k_p)
        p = p._replace(w_rec=g * p.w_rec)  # W ~ N(0, g^2/N)
        h0 = jax.random.normal(k_h, (n,))
        lam = gf.lyapunov_spectrum(base, p, xs, k=cfg.k, transient=cfg.transient, carry=h0)
        norms = gf.hidden_grad_norms(base, p, xs[: cfg.transient], lambda ys: jnp.sum(ys[-1]), carry=h0)
        return lam, gf.decay_rate(norms, start=cfg.transient // 2)

    keys = jax.random.split(jax.random.key(0), cfg.seeds)
    gg, kk = jnp.repeat(jnp.asarray(gains, jnp.float32), cfg.seeds), jnp.tile(keys, (cfg.num_gains,))
    lam, rate = jax.jit(jax.vmap(measure))(gg, kk)
    lam = np.asarray(lam).reshape(cfg.num_gains, cfg.seeds, cfg.k)
    rate = np.asarray(rate).reshape(cfg.num_gains, cfg.seeds)
    lam_max = lam[:, :, 0]
    mean = lam_max.mean(axis=1)
    cross = None
    for i in range(len(gains) - 1):
        if mean[i] < 0 <= mean[i + 1]:
            cross = float(gains[i] - mean[i] * (gains[i + 1] - gains[i]) / (mean[i + 1] - mean[i]))
            break
    results = {
        "gains": gains.tolist(),
        "lyapunov_max_mean": mean.tolist(),
        "lyapunov_max_std": lam_max.std(axis=1).tolist(),
        "lyapunov_top_k_mean": lam.mean(axis=1).tolist(),
        "grad_decay_rate_mean": rate.mean(axis=1).tolist(),
        "log_g": np.log(gains).tolist(),
        "estimated_transition_g": cross,
        "ordered_below_1": bool(np.all(mean[gains < 0.95] < 0)),
        "chaotic_above_1": bool(np.all(mean[gains > 1.1] > 0)),
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"lambda_max crosses 0 at g = {cross} (theory: 1); ordered below 1: {results['ordered_below_1']}, "
          f"chaotic above 1.1: {results['chaotic_above_1']}")

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.errorbar(gains, mean, yerr=lam_max.std(axis=1), fmt="o-", ms=4, capsize=2,
                label=rf"$\lambda_{{max}}$ (QR, N={n}, {cfg.seeds} seeds)")
    ax.plot(gains[gains <= 1.0], np.log(gains[gains <= 1.0]), "k:", label=r"ordered phase theory: $\log g$")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axvline(1.0, color="r", lw=0.8, ls="--", label="mean-field transition g = 1")
    if cross is not None:
        ax.axvline(cross, color="tab:green", lw=0.8, ls="-.", label=f"measured crossing g = {cross:.2f}")
    ax.set_xlabel(r"gain g  ($W_{ij} \sim \mathcal{N}(0, g^2/N)$)")
    ax.set_ylabel(r"largest Lyapunov exponent $\lambda_{max}$ (nats/step)")
    ax.set_title("edge of chaos in a random tanh RNN", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "edge_of_chaos.png"), dpi=100)
    print(f"wrote {out}/config.json, results.json, edge_of_chaos.png")


if __name__ == "__main__":
    main()
