"""Where do an IRNN and a tanh RNN train on the adding problem? Optuna search (packed) vs a grid, same budget.

For each cell (``irnn``: ReLU RNN with W_rec = gain * I, Le et al. 2015; ``elman-tanh``) and each sequence
length T, the learning rate x recurrent init gain plane is searched twice with the same number of runs:

- ``rnnjax.search`` with TPE, ``pack`` trials per compiled program (``run_search``);
- a ``grid_lr`` x ``grid_gain`` grid in one ``rnnjax.sweep`` program.

The best configuration of each is then re-trained over 5 seeds (one sweep; mean and 95 % CI of the
evaluation loss, solved fraction with ``loss < 0.1 * baseline``). Separately, the same ``timing_trials``
random-sampler trials are run packed (``pack``) and unpacked (``pack=1``) in one process, side by side:
the values must agree bit for bit, the wall times are what packing saves (after a one-trial warm-up, so
neither pays the process's one-time costs).

Writes ``OUT/config.json``, ``OUT/results.json`` and, with ``--results DIR``, ``DIR/search_irnn.md``,
``DIR/search_irnn.png`` (the plane) and ``DIR/search_irnn_packing.png`` (wall time).

    python experiments/search_irnn.py                       # about 10 min on a shared 2-core CPU
    python experiments/search_irnn.py --steps 60 --trials 4 --grid-lr 1e-3,1e-2 --grid-gain 1,1.5 --seeds 2 \\
        --timing-trials 2 --lengths 10 --cells irnn        # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import numpy as np

import rnnjax
from rnnjax import search as se
from rnnjax import study as st
from rnnjax import sweep as sw
from rnnjax.train import RunConfig


@dataclasses.dataclass(frozen=True)
class Config:
    cells: tuple = ("irnn", "elman-tanh")
    lengths: tuple = (10, 30)
    hidden: int = 32
    batch_size: int = 32
    steps: int = 600
    eval_every: int = 200
    eval_size: int = 256
    trials: int = 9
    pack: int = 9
    space: str = "lr=loguniform:1e-4:1e-1,init_gain=uniform:0.5:2"
    grid_lr: tuple = (1e-4, 3e-3, 1e-1)
    grid_gain: tuple = (0.5, 1.0, 1.5)
    seeds: int = 5
    timing_trials: int = 6
    timing_pack: int = 6
    sampler_seed: int = 0
    out: str = "runs/search_irnn"
    results: str | None = None
    replot: bool = False  # only redraw DIR/search_irnn.md and the figures from OUT/results.json


def base_config(cfg: Config, cell: str, length: int) -> RunConfig:
    return RunConfig(task="adding", cell=cell, hidden=cfg.hidden, seq_len=length, batch_size=cfg.batch_size,
                     steps=cfg.steps, eval_every=cfg.eval_every, task_options=(("eval_size", cfg.eval_size),))


def searched(cfg, base, space, name, *, sampler, pack, trials):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, sampler=sampler, direction="minimize")
    t0 = time.perf_counter()
    result = se.run_search(study, base, space, trials=trials, pack=pack, out=os.path.join(cfg.out, name))
    return study, result, time.perf_counter() - t0


def five_seeds(cfg, configs):
    """Each config over seeds 0..seeds-1 in one sweep: interval of the eval loss and solved fraction."""
    runs = [dataclasses.replace(c, seed=s) for c in configs for s in range(cfg.seeds)]
    rows = sw.run_sweep(runs).rows
    out = []
    for i in range(len(configs)):
        part = rows[i * cfg.seeds:(i + 1) * cfg.seeds]
        out.append({"loss": st.interval([r["eval_loss"] for r in part]),
                    "solved": float(np.mean([st.is_solved(r, st.DEFAULT_SOLVED) for r in part]))})
    return out


def run(cfg: Config, save=lambda res: None) -> dict:
    """Packed against unpacked first, then every (cell, T); ``save(res)`` after each part (partial results)."""
    import optuna

    os.makedirs(cfg.out, exist_ok=True)
    with open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)
    space = se.parse_space(cfg.space)
    res = {"settings": [], "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                                       "jax": __import__("jax").__version__, "optuna": optuna.__version__,
                                       "rnnjax": rnnjax.__version__}}
    # ---- packed against unpacked: the same random-sampler trials, side by side
    base = base_config(cfg, cfg.cells[0], cfg.lengths[0])
    timing, values = {}, {}
    # warm-up: one trial of another seed pays the process's one-time costs (the evaluation set, eager kernels)
    searched(cfg, dataclasses.replace(base, seed=1), space, "warmup", pack=1, trials=1,
             sampler=optuna.samplers.RandomSampler(seed=cfg.sampler_seed + 1))
    for pack in (cfg.timing_pack, 1):
        print(f"== timing: {cfg.timing_trials} trials, pack {pack}", flush=True)
        _, result, wall = searched(cfg, base, space, f"timing_pack{pack}", pack=pack, trials=cfg.timing_trials,
                                   sampler=optuna.samplers.RandomSampler(seed=cfg.sampler_seed))
        timing[pack] = {"wall_s": wall, "programs": len(result.packs), "load_avg": os.getloadavg()[0],
                        **{k: sum(p["timing"][k] for p in result.packs) for k in ("init_s", "compile_s", "train_s")}}
        values[pack] = [(tuple(sorted(r["params"].items())), r["value"]) for r in result.trials]
    assert values[cfg.timing_pack] == values[1], "packed and unpacked trials differ"
    res.update(timing={str(k): v for k, v in timing.items()}, timing_setting=f"{cfg.cells[0]}, T={cfg.lengths[0]}",
               bitwise_packed_equals_unpacked=True)
    save(res)
    settings = res["settings"]
    for cell in cfg.cells:
        for length in cfg.lengths:
            base = base_config(cfg, cell, length)
            name = f"{cell}_T{length}"
            print(f"== {name}: search ({cfg.trials} trials, {cfg.pack} per program)", flush=True)
            study, result, search_s = searched(cfg, base, space, name, pack=cfg.pack, trials=cfg.trials,
                                               sampler=optuna.samplers.TPESampler(seed=cfg.sampler_seed,
                                                                                  constant_liar=True))
            print(f"== {name}: grid ({len(cfg.grid_lr)} x {len(cfg.grid_gain)})", flush=True)
            t0 = time.perf_counter()
            grid = sw.run_sweep(sw.grid(base, init_gains=cfg.grid_gain, lrs=cfg.grid_lr)).rows
            grid_s = time.perf_counter() - t0
            trials = [r for r in result.trials if r["state"] == "COMPLETE"]
            best_s = min(trials, key=lambda r: r["value"])
            best_g = min((r for r in grid if r["eval_loss"] is not None), key=lambda r: r["eval_loss"])
            conf_s = dataclasses.replace(base, **best_s["params"])
            conf_g = dataclasses.replace(base, lr=best_g["lr"], init_gain=best_g["init_gain"])
            print(f"== {name}: best configurations over {cfg.seeds} seeds", flush=True)
            seeds_s, seeds_g = five_seeds(cfg, [conf_s, conf_g])
            baseline = grid[0]["baseline_loss"]
            settings.append({
                "cell": cell, "T": length, "baseline_loss": baseline,
                "search": {"wall_s": search_s, "trials": [{"lr": r["params"]["lr"], "init_gain": r["params"]["init_gain"],
                                                            "eval_loss": r["value"]} for r in result.trials],
                           "failed": sum(r["state"] == "FAIL" for r in result.trials),
                           "best": {"lr": conf_s.lr, "init_gain": conf_s.init_gain, "value": best_s["value"],
                                    "seeds": seeds_s},
                           "solved_trials": sum(r["value"] < 0.1 * baseline for r in trials)},
                "grid": {"wall_s": grid_s, "trials": [{"lr": r["lr"], "init_gain": r["init_gain"],
                                                        "eval_loss": r["eval_loss"]} for r in grid],
                         "best": {"lr": conf_g.lr, "init_gain": conf_g.init_gain, "value": best_g["eval_loss"],
                                  "seeds": seeds_g},
                         "solved_trials": sum(r["eval_loss"] is not None and r["eval_loss"] < 0.1 * baseline
                                              for r in grid)},
                "load_avg": os.getloadavg()[0],
            })
            save(res)
    return res


def _ci(d):
    i = d["loss"]
    return f"{i['mean']:.4f} ± {i['ci95']:.4f}" if i["ci95"] is not None else f"{i['mean']:.4f}"


def command(cfg: Config) -> str:
    """The command that reproduces ``cfg`` (its non-default settings) into experiments/results."""
    flags = []
    for f in dataclasses.fields(Config):
        value = getattr(cfg, f.name)
        if f.name in ("out", "results", "replot") or value == f.default:
            continue
        flags.append(f"--{f.name.replace('_', '-')} " + (",".join(map(str, value)) if isinstance(value, tuple)
                                                          else str(value)))
    return " ".join(["python experiments/search_irnn.py", *flags, "--results experiments/results"])


def write_markdown(cfg: Config, res: dict, path: str) -> None:
    t = res["timing"]
    packed, single = t[str(cfg.timing_pack)], t["1"]
    loads = ", ".join(f"{s['load_avg']:.0f}" for s in res["settings"]) or "-"
    lines = [
        "# IRNN and tanh RNN on adding: Optuna search (packed) vs grid, same budget",
        "",
        f"Command: `{command(cfg)}` (hidden {cfg.hidden}, batch "
        f"{cfg.batch_size}, {cfg.steps} steps per run, eval on {cfg.eval_size} sequences; {cfg.trials} TPE trials "
        f"({cfg.pack} per compiled program) against a {len(cfg.grid_lr)} x {len(cfg.grid_gain)} grid of lr "
        f"{list(cfg.grid_lr)} x gain {list(cfg.grid_gain)}; machine: a 2-core CPU shared with other jobs, 1-min "
        f"load average {loads} after each row). Best configurations re-trained over {cfg.seeds} seeds: mean ± 95 % CI "
        f"of the eval loss; solved = loss < 0.1 x baseline (baseline = predicting the mean)."
        + (" TPE draws its first 10 trials at random (`n_startup_trials`), so with "
           f"{cfg.trials} trials this search is a random search over the continuous ranges, packed into one "
           "program." if cfg.trials <= 10 else ""),
        "",
        f"| cell | T | baseline | search: best lr, gain | its loss, {cfg.seeds} seeds | solved | grid: best lr, gain | "
        f"its loss, {cfg.seeds} seeds | solved | solved trials (search / grid) | diverged trials (search / grid) | "
        "wall s (search / grid) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in res["settings"]:
        a, b = s["search"], s["grid"]
        lines.append(f"| {s['cell']} | {s['T']} | {s['baseline_loss']:.4f} | {a['best']['lr']:.2e}, "
                     f"{a['best']['init_gain']:.2f} | {_ci(a['best']['seeds'])} | {a['best']['seeds']['solved']:.0%} | "
                     f"{b['best']['lr']:.0e}, {b['best']['init_gain']:.1f} | {_ci(b['best']['seeds'])} | "
                     f"{b['best']['seeds']['solved']:.0%} | {a['solved_trials']} / {b['solved_trials']} of "
                     f"{cfg.trials} / {len(b['trials'])} | "
                     f"{sum(r['eval_loss'] is None for r in a['trials'])} / "
                     f"{sum(r['eval_loss'] is None for r in b['trials'])} | {a['wall_s']:.0f} / {b['wall_s']:.0f} |")
    lines += [
        "",
        f"## Packed against unpacked ({res['timing_setting']}, the same {cfg.timing_trials} random-sampler trials)",
        "",
        "| pack | compiled programs | wall s | compile s | init s | train s |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in ((cfg.timing_pack, packed), (1, single)):
        lines.append(f"| {k} | {v['programs']} | {v['wall_s']:.1f} | {v['compile_s']:.1f} | {v['init_s']:.1f} | "
                     f"{v['train_s']:.1f} |")
    lines += ["", f"1-min load average after each: {packed['load_avg']:.0f} (packed), {single['load_avg']:.0f} "
              "(unpacked): wall times on a shared machine are indicative."]
    lines += ["", f"Packed is {single['wall_s'] / packed['wall_s']:.1f}x faster; every trial's value is bit for bit "
              "the same in both (asserted by the script). `compile s` is the training program's compilation (once "
              "per program); `init s` includes one small compilation per trial (each init gain is a constant of "
              "its initialiser, as in `rnnjax train`) and stacking the runs' states; `train s` includes the "
              "evaluation program's compilation at its first call (once per program) and the evaluations "
              f"every {cfg.eval_every} steps.", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def plot(cfg: Config, res: dict, plane: str, packing: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = res["settings"]
    if not settings:
        plane = None
    fig, axes = plt.subplots(len(cfg.cells), len(cfg.lengths), figsize=(4.2 * len(cfg.lengths), 3.4 * len(cfg.cells)),
                             squeeze=False, dpi=110, layout="constrained")
    for ax, s in zip(axes.flat, settings):
        base = s["baseline_loss"]
        for key, marker, label in (("search", "o", "TPE search"), ("grid", "s", "grid")):
            rows = [r for r in s[key]["trials"] if r["eval_loss"] is not None]
            rel = np.array([r["eval_loss"] / base for r in rows])
            sc = ax.scatter([r["lr"] for r in rows], [r["init_gain"] for r in rows], c=np.log10(np.clip(rel, 1e-3, 10)),
                            cmap="viridis_r", vmin=-3, vmax=1, marker=marker, s=40, edgecolors="k", linewidths=0.4,
                            label=label)
            bad = [r for r in s[key]["trials"] if r["eval_loss"] is None]  # diverged (non-finite)
            if bad:
                ax.scatter([r["lr"] for r in bad], [r["init_gain"] for r in bad], marker="x", color="red", s=30,
                           label=f"{label}: diverged")
        ax.set_xscale("log")
        ax.set_title(f"{s['cell']}, T={s['T']}", fontsize=9)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("recurrent init gain")
        ax.legend(fontsize=7, loc="lower left")
    if plane is not None:
        fig.colorbar(sc, ax=axes, label="log10(eval loss / baseline)")
        fig.suptitle(f"adding, hidden {cfg.hidden}, {cfg.steps} steps: {cfg.trials} trials each (2-core CPU)",
                     fontsize=9)
        fig.savefig(plane)
    plt.close(fig)

    t = res["timing"]
    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=110)
    labels = [f"pack {cfg.timing_pack}", "pack 1"]
    left = np.zeros(2)
    for j, (name, color) in enumerate((("compile_s", "C3"), ("init_s", "C1"), ("train_s", "C0"))):
        vals = np.array([t[str(cfg.timing_pack)][name], t["1"][name]])
        ax.barh(labels, vals, left=left, color=color, label=name.replace("_s", ""))
        left += vals
    for i, p in enumerate((cfg.timing_pack, 1)):
        ax.text(left[i], i, f"  {t[str(p)]['wall_s']:.0f} s wall", va="center", fontsize=8)
    ax.set_xlim(0, left.max() * 1.3)
    ax.set_xlabel("seconds")
    ax.set_title(f"{cfg.timing_trials} trials ({res['timing_setting']}), 2-core CPU", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(packing)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Config):
        default = f.default
        if isinstance(default, tuple):
            kind = float if isinstance(default[0], float) else int if isinstance(default[0], int) else str
            p.add_argument("--" + f.name.replace("_", "-"), default=",".join(map(str, default)),
                           type=lambda s, k=kind: tuple(k(x) for x in s.split(",")))
        elif isinstance(default, bool):
            p.add_argument("--" + f.name.replace("_", "-"), action="store_true")
        else:
            p.add_argument("--" + f.name.replace("_", "-"), default=default,
                           type=type(default) if default is not None else str)
    cfg = Config(**vars(p.parse_args()))

    def save(res):
        with open(os.path.join(cfg.out, "results.json"), "w") as f:
            json.dump(res, f, indent=2)
        if cfg.results:
            os.makedirs(cfg.results, exist_ok=True)
            write_markdown(cfg, res, os.path.join(cfg.results, "search_irnn.md"))
            plot(cfg, res, os.path.join(cfg.results, "search_irnn.png"),
                 os.path.join(cfg.results, "search_irnn_packing.png"))

    if cfg.replot:  # the run's own configuration, from OUT/config.json
        with open(os.path.join(cfg.out, "config.json")) as f:
            stored = {k: tuple(v) if isinstance(v, list) else v for k, v in json.load(f).items()}
        cfg = dataclasses.replace(Config(**stored), out=cfg.out, results=cfg.results, replot=True)
        with open(os.path.join(cfg.out, "results.json")) as f:
            save(json.load(f))
        return
    res = run(cfg, save)
    print(json.dumps(res["timing"], indent=1))


if __name__ == "__main__":
    main()
