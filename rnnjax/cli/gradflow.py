"""``rnnjax gradflow``: gradient flow through time of several cells at several recurrent gains.

For every cell, recurrent init gain and seed it measures, at initialisation:
the per-step gradient norms ``||dL/dc_t||`` for a loss on the last output
(``rnnjax.gradflow.hidden_grad_norms``), their decay rate and memory horizon,
the largest Lyapunov exponent of the input-driven trajectory, and the
recurrent-matrix diagnostics; it writes ``OUT/gradflow.json``,
``OUT/grad_norms.png`` and ``OUT/lyapunov_vs_gain.png``.

Example::

    rnnjax gradflow --cells elman-tanh,lstm,gru --gains 0.5,1.0,1.5 --seq-len 100 --out runs/gradflow
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings

import numpy as np

DEFAULT_CELLS = "elman-tanh,elman-relu,irnn,lstm,gru"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gradflow",
        help="measure vanishing/exploding gradients and Lyapunov exponents of cells at init",
        description=(
            "Per cell and recurrent init gain: per-step gradient norms ||dL/dc_t|| of a loss on the last "
            "output, their decay rate (slope of log-norm vs t; > 0 vanishing, < 0 exploding), the largest "
            "Lyapunov exponent (QR method), the fraction of non-finite gradient norms and the ratio of the "
            "norms at the first and last step. Writes OUT/gradflow.json and PNG figures."
        ),
    )
    p.add_argument("--cells", default=DEFAULT_CELLS, help=f"comma-separated cell names (default {DEFAULT_CELLS})")
    p.add_argument("--gains", default="0.5,1.0,1.5", help="comma-separated recurrent init gains (default 0.5,1.0,1.5)")
    p.add_argument("--seq-len", type=int, default=100, help="sequence length T (default 100)")
    p.add_argument("--hidden", type=int, default=64, help="hidden size H (default 64)")
    p.add_argument("--input-size", type=int, default=2, help="input width for Gaussian inputs (default 2)")
    p.add_argument("--task", default=None, help="drive with a task's inputs and use its MSE loss (e.g. adding)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated integer seeds (default 0,1,2)")
    p.add_argument("--transient", type=int, default=None, help="steps left out of the Lyapunov average (default T//5)")
    p.add_argument("--fraction", type=float, default=0.01, help="memory-horizon threshold (default 0.01)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="parameter dtype (default float64: vanishing norms underflow float32 within ~100 steps)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def _jsonable(x):
    """Floats and arrays to JSON (non-finite -> None)."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _geometric_mean(ratio: np.ndarray) -> float:
    """Geometric mean over seeds; NaN if any is NaN, the median if some underflowed to 0."""
    if np.any(np.isnan(ratio)):
        return float("nan")
    if np.all(ratio > 0):
        with np.errstate(over="ignore"):
            return float(np.exp(np.mean(np.log(ratio))))
    return float(np.median(ratio))


def _inputs(args, seed: int, input_size: int, dtype):
    """(xs (T, I), target or None) for one seed."""
    import jax

    if args.task is None:
        xs = jax.random.normal(jax.random.key(10_000 + seed), (args.seq_len, input_size), dtype)
        return xs, None
    from rnnjax.tasks import get_task

    task = get_task(args.task, seq_len=args.seq_len, seed=seed)
    batch = task.sample(jax.random.key(10_000 + seed), 1)
    return batch.inputs[0].astype(dtype), batch.targets[0].astype(dtype)


def study(args) -> dict:
    """Run the measurements of ``rnnjax gradflow``; returns the JSON-ready result dict."""
    import jax
    import jax.numpy as jnp

    import rnnjax
    from rnnjax import gradflow as gf
    from rnnjax.cli import CLIError, parse_list

    cells = parse_list("--cells", args.cells, str)
    gains = parse_list("--gains", args.gains, float)
    seeds = parse_list("--seeds", args.seeds, int)
    unknown = [c for c in cells if c not in rnnjax.CELLS]
    if unknown:
        raise CLIError(f"--cells: unknown cell(s) {', '.join(unknown)}; expected some of {sorted(rnnjax.CELLS)}")
    if any(not g > 0 for g in gains):
        raise CLIError(f"--gains: expected positive numbers, got {args.gains!r}")
    if args.seq_len < 2:
        raise CLIError(f"--seq-len: expected an integer >= 2, got {args.seq_len}")
    if args.hidden < 1 or args.input_size < 1:
        raise CLIError(f"--hidden/--input-size: expected positive integers, got {args.hidden}/{args.input_size}")
    if not 0 < args.fraction < 1:
        raise CLIError(f"--fraction: expected a number in (0, 1), got {args.fraction}")
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)
    T = args.seq_len
    transient = T // 5 if args.transient is None else args.transient
    if not 0 <= transient < T:
        raise CLIError(f"--transient: expected an integer in [0, {T}), got {transient}")
    input_size = args.input_size
    if args.task is not None:
        from rnnjax.tasks import TASKS, get_task

        if args.task not in TASKS:
            raise CLIError(f"--task: unknown task {args.task!r}; expected one of {sorted(TASKS)}")
        task = get_task(args.task, seq_len=T, seed=0)
        if task.pattern != "many_to_one" or task.loss != "mse":
            raise CLIError(f"--task: expected a many-to-one regression task such as 'adding', got {args.task!r}")
        input_size = task.input_size

    inputs = [_inputs(args, s, input_size, dtype) for s in seeds]
    xs_all = jnp.stack([x for x, _ in inputs])  # (S, T, I)
    target_all = None if args.task is None else jnp.stack([y for _, y in inputs])  # (S, O)
    results: dict = {}
    for name in cells:
        # The registry's init_gain only changes the initialisation, so one cell's step serves every gain
        # and each cell compiles once: params for all (gain, seed) pairs are stacked and vmapped.
        cell = rnnjax.make_cell(name, input_size, args.hidden, dtype=dtype)
        params = [
            rnnjax.make_cell(name, input_size, args.hidden, init_gain=g, dtype=dtype).init(jax.random.key(s))
            for g in gains
            for s in seeds
        ]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
        out_size = 1 if target_all is None else target_all.shape[-1]
        readouts = jnp.stack(
            [
                jax.random.normal(jax.random.key(20_000 + s), (out_size, cell.output_size), dtype)
                / math.sqrt(cell.output_size)
                for s in seeds
            ]
        )
        reps = len(gains)
        xs_rep = jnp.tile(xs_all, (reps, 1, 1))
        ro_rep = jnp.tile(readouts, (reps, 1, 1))
        tg_rep = None if target_all is None else jnp.tile(target_all, (reps, 1))

        def measure(p, xs, w, target):
            if target is None:
                loss_fn = lambda ys: jnp.sum(w @ ys[-1])  # a linear probe of the last output
            else:
                loss_fn = lambda ys: 0.5 * jnp.sum((w @ ys[-1] - target) ** 2)  # the task's MSE
            norms = gf.hidden_grad_norms(cell, p, xs, loss_fn)
            lam = gf.lyapunov_spectrum(cell, p, xs, k=1, transient=transient)[0]
            return norms, lam, gf.decay_rate(norms), gf.memory_horizon(norms, args.fraction)

        in_axes = (0, 0, 0, None if tg_rep is None else 0)
        norms, lam, rate, horizon = jax.jit(jax.vmap(measure, in_axes=in_axes))(stacked, xs_rep, ro_rep, tg_rep)
        norms, lam, rate, horizon = (np.asarray(a, np.float64) for a in (norms, lam, rate, horizon))
        results[name] = {}
        for gi, g in enumerate(gains):
            sl = slice(gi * len(seeds), (gi + 1) * len(seeds))
            n = norms[sl]  # (S, T)
            finite = np.isfinite(n)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = n[:, 0] / n[:, -1]
                log_n = np.where(finite & (n > 0), np.log10(np.where(n > 0, n, 1.0)), np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # steps where every seed's norm is 0 or inf
                profile = np.nanmean(log_n, axis=0)
            diag = gf.recurrent_diagnostics(cell, params[gi * len(seeds)])
            results[name][f"{g:g}"] = {
                "gain": g,
                "decay_rate": float(np.nanmean(rate[sl])) if np.any(np.isfinite(rate[sl])) else float("nan"),
                "decay_rate_per_seed": rate[sl].tolist(),
                "lyapunov_max": float(np.mean(lam[sl])),
                "lyapunov_max_per_seed": lam[sl].tolist(),
                "nonfinite_fraction": float(np.mean(~finite)),
                "zero_fraction": float(np.mean(n == 0)),
                "first_last_ratio": _geometric_mean(ratio),
                "first_last_ratio_per_seed": ratio.tolist(),
                "memory_horizon": float(np.median(horizon[sl])),
                "diagnostics": gf.summary_dict(diag),
                "log10_norm_profile": profile.tolist(),
            }
    return {
        "config": {
            "cells": cells,
            "gains": gains,
            "seeds": seeds,
            "seq_len": T,
            "hidden": args.hidden,
            "input_size": input_size,
            "task": args.task,
            "transient": transient,
            "fraction": args.fraction,
            "dtype": args.dtype,
            "loss": "linear probe w @ y_{T-1}" if args.task is None else "0.5 * (w @ y_{T-1} - target)^2",
        },
        "notes": (
            "norms[t] = ||dL/dc_t||, c_t the carry entering step t; decay_rate = slope of log norm vs t "
            "(nats/step; > 0 vanishing back in time, < 0 exploding); lyapunov_max in nats/step (QR, k=1); "
            "first_last_ratio = norms[0]/norms[T-1] (geometric mean over seeds); memory_horizon = steps back "
            "until the norm falls below fraction * norms[T-1] (T means never)."
        ),
        "versions": {"jax": jax.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "device": str(jax.devices()[0].platform),
        "results": results,
    }


def plot(result: dict, out: str) -> list[str]:
    """Write ``grad_norms.png`` and ``lyapunov_vs_gain.png``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res, cfg = result["results"], result["config"]
    cells = list(res)
    cols = min(len(cells), 3)
    rows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, name in zip(axes.flat, cells):
        gains = list(res[name])
        for i, g in enumerate(gains):
            prof = np.array([np.nan if v is None else v for v in res[name][g]["log10_norm_profile"]], float)
            ax.plot(np.arange(prof.size), 10.0**prof, color=cmap(i / max(len(gains) - 1, 1)), label=f"gain {g}")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("time step t")
        ax.set_ylabel(r"$\|\partial L/\partial c_t\|$")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(cells) :]:
        ax.axis("off")
    fig.suptitle(f"gradient norm vs step, loss on the last output (T={cfg['seq_len']}, H={cfg['hidden']})", fontsize=10)
    fig.tight_layout()
    p1 = os.path.join(out, "grad_norms.png")
    fig.savefig(p1, dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name in cells:
        gains = [res[name][g]["gain"] for g in res[name]]
        lam = [np.nan if res[name][g]["lyapunov_max"] is None else res[name][g]["lyapunov_max"] for g in res[name]]
        ax.plot(gains, lam, marker="o", label=name)
    ax.axhline(0.0, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    all_gains = sorted({res[n][g]["gain"] for n in cells for g in res[n]})
    ax.set_xticks(all_gains, [f"{g:g}" for g in all_gains])
    ax.minorticks_off()
    ax.set_xlabel("recurrent init gain (log scale)")
    ax.set_ylabel(r"largest Lyapunov exponent $\lambda_{max}$ (nats/step)")
    ax.set_title("largest Lyapunov exponent vs gain", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    p2 = os.path.join(out, "lyapunov_vs_gain.png")
    fig.savefig(p2, dpi=90)
    plt.close(fig)
    return [p1, p2]


def run(args) -> int:
    from rnnjax.cli import CLIError

    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        raise CLIError(f"--out: cannot create directory {args.out!r}: {err.strerror}") from None
    start = time.perf_counter()
    try:
        result = study(args)
    except ValueError as err:  # validation errors of the library, e.g. a task option
        raise CLIError(str(err)) from None
    result["seconds"] = time.perf_counter() - start
    path = os.path.join(args.out, "gradflow.json")
    with open(path, "w") as f:
        json.dump(_jsonable(result), f, indent=1)
    figs = plot(_jsonable(result), args.out)
    print(f"{'cell':<12} {'gain':>5} {'decay/step':>11} {'lambda_max':>11} {'first/last':>11} {'nonfinite':>9}")
    for name, per_gain in result["results"].items():
        for g, r in per_gain.items():
            print(
                f"{name:<12} {g:>5} {r['decay_rate']:>11.4f} {r['lyapunov_max']:>11.4f} "
                f"{r['first_last_ratio']:>11.3e} {r['nonfinite_fraction']:>9.2f}"
            )
    print(f"wrote {path}, {', '.join(figs)} in {result['seconds']:.1f}s")
    return 0
