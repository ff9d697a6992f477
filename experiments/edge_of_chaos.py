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
    hidden: int = 400
    g_min: float = 0.5
    g_max: float = 2.5
    num_gains: int = 21
    seeds: int = 3
    seq_len: int = 1000
    transient: int = 400
    k: int = 4  # exponents per network
    tol: float = 0.005  # |lambda_max| below this counts as marginal (0)


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


def mean_field_lambda(g: float, iters: int = 2000) -> float:
    """Mean-field largest exponent of h' = tanh(W h), W ~ N(0, g^2/N), N -> infinity.

    The pre-activation variance solves ``q = g^2 E[tanh(sqrt(q) z)^2]`` (z ~ N(0, 1));
    a perturbation's squared norm grows by ``chi = g^2 E[tanh'(sqrt(q) z)^2]`` per step, so
    ``lambda_max = log(chi) / 2`` (``log g`` in the ordered phase, where q = 0).
    References: Molgedey, Schuchhardt & Schuster, PRL 69, 3717 (1992).
    """
    z, w = np.polynomial.hermite_e.hermegauss(121)
    w = w / w.sum()
    q = 1.0
    for _ in range(iters):
        q = g**2 * np.sum(w * np.tanh(np.sqrt(q) * z) ** 2)
    chi = g**2 * np.sum(w * (1.0 - np.tanh(np.sqrt(q) * z) ** 2) ** 2)
    return 0.5 * float(np.log(chi))


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
    # Finite networks just above g = 1 often settle on limit cycles (lambda_max = 0 exactly, the
    # neutral direction along the orbit); classify with a tolerance above the estimator's noise.
    tol = cfg.tol
    ordered = gains[mean < -tol]
    chaotic = gains[mean > tol]
    theory = np.array([mean_field_lambda(float(g)) for g in gains])
    results = {
        "gains": gains.tolist(),
        "mean_field_lambda_max": theory.tolist(),
        "max_abs_deviation_from_mean_field": float(np.max(np.abs(mean - theory))),
        "lyapunov_max_mean": mean.tolist(),
        "lyapunov_max_std": lam_max.std(axis=1).tolist(),
        "lyapunov_top_k_mean": lam.mean(axis=1).tolist(),
        "grad_decay_rate_mean": rate.mean(axis=1).tolist(),
        "log_g": np.log(gains).tolist(),
        "zero_crossing_g": cross,
        "tolerance": tol,
        "largest_ordered_g": float(ordered.max()) if ordered.size else None,
        "smallest_chaotic_g": float(chaotic.min()) if chaotic.size else None,
        "ordered_below_1": bool(np.all(mean[gains < 1.0 - 1e-9] < 0)),
        "chaotic_from_smallest_chaotic_g_on": bool(chaotic.size and np.all(mean[gains >= chaotic.min()] > tol)),
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"lambda_max < -{tol} up to g = {results['largest_ordered_g']}, > {tol} from g = "
          f"{results['smallest_chaotic_g']} on (theory: transition at g = 1, N -> infinity); "
          f"zero crossing at g = {cross}; max |measured - mean field| = "
          f"{results['max_abs_deviation_from_mean_field']:.3f}")

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.errorbar(gains, mean, yerr=lam_max.std(axis=1), fmt="o-", ms=4, capsize=2,
                label=rf"$\lambda_{{max}}$ (QR, N={n}, {cfg.seeds} seeds)")
    fine = np.linspace(cfg.g_min, cfg.g_max, 200)
    ax.plot(fine, [mean_field_lambda(float(g)) for g in fine], "k:", label=r"mean field: $\frac{1}{2}\log(g^2 E[\phi'^2])$")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axvline(1.0, color="r", lw=0.8, ls="--", label="mean-field transition g = 1")
    if cross is not None:
        ax.axvline(cross, color="tab:green", lw=0.8, ls="-.", label=f"measured zero crossing g = {cross:.2f}")
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
