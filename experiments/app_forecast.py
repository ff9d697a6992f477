"""Forecasting real series (statsmodels' sunspots and El Niño) with a GRU against persistence, seasonal naive and AR.

One-step forecasts (``horizon=1``, a many-to-one model over a rolling window) run on the study engine
(``rnnjax.study.run_study``: 5 seeds, mean ± 95 % CI of the test MSE). Multi-step forecasts
(``horizon=H``, an encoder–decoder that feeds back its own predictions) need the greedy roll-out,
which the study's rows do not record, so they run on ``rnnjax.sweep.run_sweep`` (the engine under
the study: the same training, the final parameters returned) and are scored per seed with
``Model.apply``; the interval is ``rnnjax.study.interval``. Every number is a test-part MSE in units
of the training part's standard deviation; the baselines read the same windows.

Usage::

    python experiments/app_forecast.py --out runs/app_forecast        # the committed table and figure
    python experiments/app_forecast.py --quick --out /tmp/app_forecast  # a smoke run (2 seeds, 100 steps)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import jax
import numpy as np

from rnnjax import study
from rnnjax.sweep import run_sweep
from rnnjax.tasks import get_task
from rnnjax.train import RunConfig, build

HERE = os.path.dirname(os.path.abspath(__file__))
BASELINES = ("persistence", "seasonal_naive", "ar", "mean")


@dataclasses.dataclass(frozen=True)
class Config:
    series: str = "sunspots,elnino"
    horizons: str = "5,6"  # multi-step horizon per series
    cell: str = "gru"
    hidden: int = 32
    steps: str = "200,1000"  # per series: the best of 100/200/400/700/1000 on the validation part (seed 0)
    lr: float = 3e-3
    batch_size: int = 32
    seeds: str = "0,1,2,3,4"
    table: str = os.path.join(HERE, "results", "app_forecast.md")


def _fmt(stat, digits=3):
    if stat["ci95"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['ci95']:.{digits}f}"


def run(cfg: Config, out: str) -> dict:
    seeds = [int(s) for s in cfg.seeds.split(",")]
    names = cfg.series.split(",")
    horizons = [int(h) for h in cfg.horizons.split(",")]
    steps = [int(s) for s in cfg.steps.split(",")]
    results = {"config": dataclasses.asdict(cfg), "series": {}, "machine": f"{platform.node()} "
               f"({os.cpu_count()} CPUs), jax {jax.__version__}"}
    for name, H, n_steps in zip(names, horizons, steps):
        common = dict(cell=cfg.cell, hidden=cfg.hidden, steps=n_steps, lr=cfg.lr, batch_size=cfg.batch_size,
                      clip=1.0)
        entry = {"steps": n_steps}
        # one step: the study engine
        base = RunConfig(task=name, **common)
        t0 = time.perf_counter()
        res = study.run_study(base, None, seeds, out=os.path.join(out, f"{name}_h1"), gradflow=False,
                              method="vmap", progress=False, solved="loss<1*baseline")
        task = get_task(name)
        entry["one_step"] = {"rnn": res.configurations[0]["metrics"]["eval_loss"],
                             "baselines": task.info["baselines"], "ar_lags": task.info["ar_lags"],
                             "wall_s": time.perf_counter() - t0,
                             "command": "rnnjax study " + " ".join(base.train_argv("DIR")[1:-2])
                             + f" --seeds {cfg.seeds} --vectorize --no-gradflow --out DIR"}
        # H steps: encoder-decoder, greedy roll-out scored per seed
        configs = [RunConfig(task=name, seed=s, task_options=(("horizon", H),), **common) for s in seeds]
        t0 = time.perf_counter()
        sw = run_sweep(configs, method="vmap")
        trainer = build(configs[0])
        ev = trainer.task.eval_batch()
        apply = jax.jit(lambda p: trainer.model.apply(p, ev.inputs, out_len=H))
        per_h, greedy, forced = [], [], []
        for i in range(len(seeds)):
            params = jax.tree.map(lambda x, i=i: x[i], sw.states.params)
            pred = np.asarray(apply(params))[..., 0]
            err = (pred - np.asarray(ev.targets)[..., 0]) ** 2
            per_h.append(err.mean(0))
            greedy.append(float(err.mean()))
            forced.append(float(trainer.evaluate(params)["loss"]))
        fc = trainer.task.info["baseline_forecasts"]
        target = np.asarray(ev.targets)[..., 0]
        entry["multi_step"] = {
            "horizon": H, "rnn_greedy": study.interval(greedy), "rnn_teacher_forced": study.interval(forced),
            "baselines": trainer.task.info["baselines"], "wall_s": time.perf_counter() - t0,
            "per_horizon": {"rnn": [study.interval([p[h] for p in per_h]) for h in range(H)],
                            **{b: ((fc[b] - target) ** 2).mean(0).tolist() for b in BASELINES}},
            "command": f"python experiments/app_forecast.py --series {name} --horizons {H} --steps {n_steps} "
                       "--out DIR",
        }
        results["series"][name] = entry
        print(f"{name}: one-step {_fmt(entry['one_step']['rnn'])} vs {entry['one_step']['baselines']}; "
              f"{H}-step greedy {_fmt(entry['multi_step']['rnn_greedy'])}", file=sys.stderr, flush=True)
    return results


def write(results: dict, out: str, table: str) -> None:
    cfg = results["config"]
    n_seeds = len(cfg["seeds"].split(","))
    lines = [
        "# Forecasting sunspots and El Niño: GRU vs persistence, seasonal naive and AR",
        "",
        f"Command: `python experiments/app_forecast.py --out DIR`. Model: {cfg['cell'].upper()} {cfg['hidden']}, "
        f"Adam {cfg['lr']}, clip 1, batch {cfg['batch_size']}; steps per series ({cfg['series']}: {cfg['steps']}) "
        "chosen as the best of 100/200/400/700/1000 on the validation part (seed 0, one-step model); "
        f"{n_seeds} seeds "
        "(mean ± half-width of the 95 % Student-t interval). Test-part MSE in units of the training std "
        "(chronological 70/15/15 split, normalised on the training part; windows of 22 years / 24 months). "
        f"Machine: {results['machine']}, shared with other jobs.",
        "",
        "| series | horizon | RNN (test MSE) | persistence | seasonal naive | AR(p) | train mean | below "
        "persistence? | steps, wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in results["series"].items():
        o, m = e["one_step"], e["multi_step"]
        b = o["baselines"]
        lines.append(f"| {name} | 1 (many-to-one) | **{_fmt(o['rnn'])}** | {b['persistence']:.3f} | "
                     f"{b['seasonal_naive']:.3f} | {b['ar']:.3f} (p = {o['ar_lags']}) | {b['mean']:.3f} | "
                     f"{'yes' if o['rnn']['high'] < b['persistence'] else 'no'} | {e['steps']}, {o['wall_s']:.0f} s |")
        b = m["baselines"]
        lines.append(f"| {name} | {m['horizon']} (encoder–decoder, greedy) | **{_fmt(m['rnn_greedy'])}** "
                     f"(teacher-forced {_fmt(m['rnn_teacher_forced'])}) | {b['persistence']:.3f} | "
                     f"{b['seasonal_naive']:.3f} | {b['ar']:.3f} | {b['mean']:.3f} | "
                     f"{'yes' if m['rnn_greedy']['high'] < b['persistence'] else 'no'} | "
                     f"{e['steps']}, {m['wall_s']:.0f} s |")
    lines += ["", "Commands of the rows: " + "; ".join(
        f"`{e['one_step']['command']}` (one step), `{e['multi_step']['command']}` (both rows)"
        for e in results["series"].values()),
        "", "The study's one-step rows are `rnnjax study` runs (`--vectorize`: seeds batched with `jax.vmap`); "
        "the encoder–decoder rows train the same way on `rnnjax.sweep.run_sweep` and are scored by greedy "
        "roll-out of each seed's final parameters (the study records only the teacher-forced loss).",
        "", "![MSE by horizon](app_forecast.png)", ""]
    os.makedirs(os.path.dirname(table), exist_ok=True)
    with open(table, "w") as f:
        f.write("\n".join(lines))
    with open(os.path.splitext(table)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1, default=float)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["series"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        m = results["series"][name]["multi_step"]
        h = np.arange(1, m["horizon"] + 1)
        rnn = m["per_horizon"]["rnn"]
        mean = np.array([s["mean"] for s in rnn])
        ci = np.array([s["ci95"] or 0.0 for s in rnn])
        ax.plot(h, mean, "o-", color="k", label=f"{cfg['cell'].upper()} enc–dec (greedy)")
        ax.fill_between(h, mean - ci, mean + ci, color="k", alpha=0.2)
        for b, style in zip(BASELINES, ("--", ":", "-.", (0, (1, 3)))):
            ax.plot(h, m["per_horizon"][b], linestyle=style, label=b.replace("_", " "))
        ax.set_title(f"{name}: test MSE by horizon")
        ax.set_xlabel("steps ahead")
        ax.set_ylabel("MSE (training std units)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.splitext(table)[0] + ".png", dpi=110)
    plt.close(fig)


def rewrite(path: str) -> None:
    """Write the table and figure again from a saved ``app_forecast.json`` (no training)."""
    with open(path) as f:
        results = json.load(f)
    write(results, os.path.dirname(path), os.path.splitext(path)[0] + ".md")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Config):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--quick", action="store_true", help="2 seeds, 100 steps, table under --out")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    if args.quick:
        values.update(seeds="0,1", steps="100,100", table=os.path.join(args.out, "app_forecast.md"))
    cfg = Config(**values)
    results = run(cfg, args.out)
    write(results, args.out, cfg.table)
    print(open(cfg.table).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
