"""The vanishing/exploding-gradient benchmark: cells x recurrent init gain x clipping, at init and after training.

For every cell and recurrent init gain it measures, at initialisation on adding-
problem inputs, the per-step gradient norms ``||dL/dc_t||`` of the task loss
(``rnnjax.gradflow.hidden_grad_norms``), their decay rate and the largest
Lyapunov exponent, and labels the configuration *vanishing* (norm ratio
first/last step < 1e-3), *exploding* (> 1e3 or non-finite) or *stable*. Then it
trains each (cell, gain, clipping on/off) on the adding problem at several T
with a fixed step budget (Adam, ``rnnjax.train.make_train_step``, which skips
non-finite steps and counts them) and reports the evaluation MSE (baseline 1/6),
whether the run *learned* (MSE < 0.5 x baseline) or *solved* the task (MSE <
0.1 x baseline), skipped steps, gradient norms during training, and the
gradient-flow profile after training. Finally: the longest T each cell solves
within the budget.

All gains and clipping settings of one cell at one T are one compiled program
(``jax.vmap`` over stacked parameters and clipping thresholds; the registry's
``init_gain`` only changes initialisation).

Usage::

    python benchmarks/vanishing_exploding.py --out benchmarks/results  # the committed table
    python benchmarks/vanishing_exploding.py --steps 100 --seq-lens 20 --cells lstm --out /tmp/ve  # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from rnnjax import gradflow as gf
from rnnjax.tasks import get_task
from rnnjax.models import for_task
from rnnjax.train import TrainState, make_train_step


@dataclasses.dataclass(frozen=True)
class Config:
    cells: tuple = ("elman-tanh", "elman-relu", "irnn", "lstm", "gru")
    gains: tuple = (0.5, 1.0, 1.5)
    clips: tuple = (0.0, 1.0)  # 0 = no clipping; else clip_by_global_norm threshold (Pascanu: c = 1 on synthetic tasks)
    seq_lens: tuple = (10, 30, 90)
    hidden: int = 32
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    gradflow_sequences: int = 8  # eval sequences averaged for the gradient-flow profiles
    vanish_ratio: float = 1e-3  # ||dL/dc_0|| / ||dL/dc_{T-1}|| below this: vanishing
    explode_ratio: float = 1e3  # above this (or non-finite): exploding
    learned_frac: float = 0.5  # eval MSE < learned_frac * 1/6: learned
    solved_frac: float = 0.1  # eval MSE < solved_frac * 1/6: solved


def parse_args() -> tuple[Config | None, str, str | None]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--cells", default=",".join(d.cells))
    p.add_argument("--gains", default=",".join(map(str, d.gains)))
    p.add_argument("--clips", default=",".join(map(str, d.clips)))
    p.add_argument("--seq-lens", default=",".join(map(str, d.seq_lens)))
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--markdown-from", default=None, metavar="JSON",
                   help="only rewrite OUT/vanishing_exploding.md from an existing results JSON")
    a = p.parse_args()
    if a.markdown_from:
        return None, a.out, a.markdown_from
    cfg = Config(
        cells=tuple(a.cells.split(",")),
        gains=tuple(float(g) for g in a.gains.split(",")),
        clips=tuple(float(c) for c in a.clips.split(",")),
        seq_lens=tuple(int(t) for t in a.seq_lens.split(",")),
        hidden=a.hidden,
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
    )
    return cfg, a.out, None


def _label(ratio: float, cfg: Config) -> str:
    if not math.isfinite(ratio):
        return "exploding"
    if ratio < cfg.vanish_ratio:
        return "vanishing"
    if ratio > cfg.explode_ratio:
        return "exploding"
    return "stable"


def _profile_fn(cell, seq_len, transient):
    """(cell params, readout params, inputs (S, T, I), targets (S, O)) -> per-sequence norms, lambda_max."""
    readout = rnnjax.linear(cell.output_size, 1)

    def one(p_cell, p_out, xs, target):
        loss_fn = lambda ys: 0.5 * jnp.sum((readout.apply(p_out, ys[-1]) - target) ** 2)
        norms = gf.hidden_grad_norms(cell, p_cell, xs, loss_fn)
        lam = gf.lyapunov_spectrum(cell, p_cell, xs, k=1, transient=transient)[0]
        return norms, lam

    return jax.vmap(one, in_axes=(None, None, 0, 0))


def _summarise_profile(norms, lam, cfg):
    """norms (S, T), lam (S,) -> dict of scalars."""
    norms = np.asarray(norms, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = norms[:, 0] / norms[:, -1]
    if np.any(~np.isfinite(norms)):
        geo = float("inf")  # a norm overflowed
    elif np.any(ratio == 0):
        geo = 0.0  # the first-step norm underflowed to 0
    else:
        geo = float(np.exp(np.mean(np.log(ratio))))
    rates = [float(gf.decay_rate(n)) for n in norms]
    return {
        "decay_rate": float(np.nanmean(rates)),
        "lyapunov_max": float(np.mean(np.asarray(lam))),
        "first_last_ratio": geo,
        "nonfinite_fraction": float(np.mean(~np.isfinite(norms))),
        "label": _label(geo, cfg),
    }


def run_cell_length(cfg: Config, name: str, seq_len: int, log) -> list[dict]:
    """All gains x clips of one cell at one T, as one vmapped, compiled program."""
    task = get_task("adding", seq_len=seq_len, seed=cfg.seed)
    ev = task.eval_batch()
    xs_gf = ev.inputs[: cfg.gradflow_sequences]
    tg_gf = ev.targets[: cfg.gradflow_sequences]
    # The registry's init_gain only changes the initialisation: one model's functions serve every gain.
    model = for_task(task, functools.partial(rnnjax.make_cell, name), cfg.hidden)
    cell = model.cell
    key = jax.random.key(cfg.seed)
    per_gain = [
        for_task(task, functools.partial(rnnjax.make_cell, name, init_gain=g), cfg.hidden).init(key) for g in cfg.gains
    ]
    combos = [(gi, c) for gi in range(len(cfg.gains)) for c in cfg.clips]
    params = jax.tree.map(lambda *a: jnp.stack(a), *[per_gain[gi] for gi, _ in combos])
    # clip 0 = off: an infinite threshold leaves every update unchanged (same program for both).
    clips = jnp.array([c if c > 0 else jnp.inf for _, c in combos], jnp.float32)

    def train(params, clip):
        opt = optax.chain(optax.clip_by_global_norm(clip), optax.adam(cfg.lr))
        train_step = make_train_step(model.loss, opt, has_aux=True, jit=False)
        zero = jnp.zeros((), jnp.int32)
        data_key = jax.random.fold_in(key, 1)
        state = TrainState(params, opt.init(params), zero, data_key, zero, zero)

        def one(state, _):
            batch = task.sample(jax.random.fold_in(data_key, state.step), cfg.batch_size)
            state, m = train_step(state, batch)
            return state, (m["loss"], m["grad_norm"])

        state, (loss, gnorm) = jax.lax.scan(one, state, None, length=cfg.steps)
        mse = model.evaluate(state.params, ev)["loss"]
        return state.params, state.skipped, loss, gnorm, mse

    profile = jax.jit(jax.vmap(_profile_fn(cell, seq_len, seq_len // 5), in_axes=(0, 0, None, None)))
    t0 = time.perf_counter()
    init_norms, init_lam = profile(params.cell, params.readout, xs_gf, tg_gf)
    final, skipped, loss_curve, gnorm, eval_mse = jax.jit(jax.vmap(train))(params, clips)
    end_norms, end_lam = profile(final.cell, final.readout, xs_gf, tg_gf)
    jax.block_until_ready(end_norms)
    seconds = time.perf_counter() - t0
    gnorm, loss_curve = np.asarray(gnorm, np.float64), np.asarray(loss_curve, np.float64)
    skipped, eval_mse = np.asarray(skipped), np.asarray(eval_mse, np.float64)
    rows = []
    for i, (gi, clip) in enumerate(combos):
        g = cfg.gains[gi]
        at_init = _summarise_profile(init_norms[i], init_lam[i], cfg)
        trained = _summarise_profile(end_norms[i], end_lam[i], cfg)
        mse = float(eval_mse[i])
        finite_g = gnorm[i][np.isfinite(gnorm[i])]
        rows.append({
            "cell": name,
            "gain": g,
            "clip": clip,
            "seq_len": seq_len,
            "init": at_init,
            "trained": trained,
            "eval_mse": mse,
            "final_train_loss": float(np.mean(loss_curve[i][-20:])),
            "learned": bool(mse < cfg.learned_frac / 6),
            "solved": bool(mse < cfg.solved_frac / 6),
            "skipped_steps": int(skipped[i]),
            "grad_norm_median": float(np.median(finite_g)) if finite_g.size else float("nan"),
            "grad_norm_max": float(np.max(finite_g)) if finite_g.size else float("nan"),
        })
        log(f"{name:<11} T={seq_len:<4} gain={g:<4} clip={clip:<4} init={at_init['label']:<9} "
            f"lam={at_init['lyapunov_max']:+.3f} mse={mse:.4f} skipped={int(skipped[i])} "
            f"after={trained['label']}")
    log(f"  ({seconds:.1f}s for {len(combos)} runs of {name} at T={seq_len}, compile included)")
    return rows


def _fmt(x, spec=".3f"):
    """Format a number; None (a non-finite value in the JSON) and inf/nan print as "non-finite"."""
    return "non-finite" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def markdown(result: dict) -> str:
    cfg = result["config"]
    rows = result["rows"]
    lines = [
        "# Vanishing/exploding gradients: cells x recurrent init gain x clipping (adding problem)",
        "",
        f"Produced by `python benchmarks/vanishing_exploding.py --out benchmarks/results` in "
        f"{result['seconds']:.0f} s on {result['device']} ({result['cpu_count']} cores, shared), "
        f"jax {result['versions']['jax']}, float32.",
        f"Budget per run: {cfg['steps']} Adam steps (lr {cfg['lr']}), batch {cfg['batch_size']}, "
        f"H = {cfg['hidden']}, seed {cfg['seed']}; clip = global-norm threshold (0 = off).",
        "Gradient profile: `||dL/dc_t||` of the task MSE on the last output, mean over "
        f"{cfg['gradflow_sequences']} eval sequences; ratio = `||dL/dc_0|| / ||dL/dc_T-1||` (geometric mean); "
        f"vanishing if ratio < {cfg['vanish_ratio']:g}, exploding if > {cfg['explode_ratio']:g} or non-finite; "
        "decay = slope of log-norm vs t (nats/step, > 0 vanishes back in time); "
        "lambda = largest Lyapunov exponent (nats/step). MSE baseline (predict the mean) = 1/6 = 0.167; "
        f"learned: MSE < {cfg['learned_frac'] / 6:.3f}; solved: MSE < {cfg['solved_frac'] / 6:.4f}.",
        "",
        "## Longest T solved within the budget",
        "",
        "| cell | longest T solved | config that solved it | longest T learned |",
        "|---|---|---|---|",
    ]
    for cell, best in result["longest_solved"].items():
        lines.append(f"| {cell} | {best['seq_len'] or '-'} | {best['config'] or '-'} | "
                     f"{result['longest_learned'][cell]['seq_len'] or '-'} |")
    lines += [
        "",
        "## At initialisation (gradient flow on adding inputs)",
        "",
        "| cell | gain | T | ratio first/last | decay/step | lambda_max | label |",
        "|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for r in rows:
        key = (r["cell"], r["gain"], r["seq_len"])
        if key in seen:
            continue
        seen.add(key)
        i = r["init"]
        lines.append(f"| {r['cell']} | {r['gain']:g} | {r['seq_len']} | {_fmt(i['first_last_ratio'], '.2e')} | "
                     f"{_fmt(i['decay_rate'])} | {_fmt(i['lyapunov_max'])} | {i['label']} |")
    lines += [
        "",
        "## After training",
        "",
        "| cell | gain | clip | T | eval MSE | learned | solved | skipped steps | grad norm median / max | "
        "after: ratio | after: label |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["trained"]
        lines.append(
            f"| {r['cell']} | {r['gain']:g} | {r['clip']:g} | {r['seq_len']} | {_fmt(r['eval_mse'], '.4g')} | "
            f"{'yes' if r['learned'] else 'no'} | {'yes' if r['solved'] else 'no'} | {r['skipped_steps']} | "
            f"{_fmt(r['grad_norm_median'], '.2g')} / {_fmt(r['grad_norm_max'], '.2g')} | "
            f"{_fmt(t['first_last_ratio'], '.2e')} | {t['label']} |"
        )
    return "\n".join(lines) + "\n"


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def main() -> None:
    cfg, out, from_json = parse_args()
    os.makedirs(out, exist_ok=True)
    if from_json:
        with open(from_json) as f:
            result = json.load(f)
        with open(os.path.join(out, "vanishing_exploding.md"), "w") as f:
            f.write(markdown(result))
        return
    start = time.perf_counter()
    rows = []
    for name in cfg.cells:
        for seq_len in cfg.seq_lens:
            rows += run_cell_length(cfg, name, seq_len, log=lambda s: print(s, flush=True))
    longest, learned = {}, {}
    for name in cfg.cells:
        solved = [r for r in rows if r["cell"] == name and r["solved"]]
        best = max(solved, key=lambda r: (r["seq_len"], -r["eval_mse"]), default=None)
        longest[name] = {
            "seq_len": best["seq_len"] if best else None,
            "config": f"gain {best['gain']:g}, clip {best['clip']:g}" if best else None,
        }
        lr_ = [r["seq_len"] for r in rows if r["cell"] == name and r["learned"]]
        learned[name] = {"seq_len": max(lr_, default=None)}
    result = {
        "config": dataclasses.asdict(cfg),
        "rows": rows,
        "longest_solved": longest,
        "longest_learned": learned,
        "seconds": time.perf_counter() - start,
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "versions": {"jax": jax.__version__, "optax": optax.__version__, "numpy": np.__version__,
                     "python": platform.python_version(), "rnnjax": rnnjax.__version__},
        "dtype": "float32",
    }
    with open(os.path.join(out, "vanishing_exploding.json"), "w") as f:
        json.dump(_clean(result), f, indent=1)
    with open(os.path.join(out, "vanishing_exploding.md"), "w") as f:
        f.write(markdown(result))
    print(f"wrote {out}/vanishing_exploding.{{json,md}} in {result['seconds']:.0f}s")


if __name__ == "__main__":
    main()
