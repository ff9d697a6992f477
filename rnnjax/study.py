"""Studies: a grid of run settings × seeds, trained group after group, summarised with confidence intervals.

A study is the unit of evidence of a training claim: every configuration (a
point of the grid: cell, init gain, sequence length, learning rate, any
``RunConfig`` field or task option) is trained with several seeds, and each
metric is reported per seed and as mean, standard deviation and a 95 %
confidence interval (Student's t over seeds), with the fraction of seeds that
solved the task and gradient-flow summaries at initialisation and at the end.

How it runs:

- **Groups.** Runs whose training state and batches have the same shapes
  (``rnnjax.sweep.group_key``) train together in one compiled program
  (``rnnjax.sweep.run_sweep``); settings that only change values — seed,
  learning rate, init gain, clipping threshold, optimizer hyper-parameters,
  scalar task options — stay inside one group. Each run equals the separate
  ``rnnjax train`` run with the same flags, bit for bit (``method="map"``,
  the default; every row carries that command).
- **One evaluation set per configuration.** Every seed is scored on the
  evaluation set of the shared ``eval_seed``, so the interval measures
  training variance, not evaluation-set noise.
- **Resume.** With ``out``, each finished group is written at once
  (``DIR/groups/<id>.json``); re-running the same study skips finished
  groups, and a different study in the same directory is refused before any
  work starts. The directory is locked for the whole study
  (``rnnjax.rundir.RunLock``).
- **Failures.** A diverging seed (non-finite steps until ``max_skips``) is
  reported (``diverged``, metrics None) and left out of the means; an error
  in one group is recorded and the study goes on.

Example::

    base = RunConfig(task="adding", seq_len=50, steps=300)
    result = rnnjax.study.run_study(base, {"cell": ["lstm", "gru"], "seq_len": [50, 100]}, seeds=range(5))
    result.configurations[0]["metrics"]["eval_loss"]  # {"mean", "std", "ci95", "n", "values"}
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import shlex
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

STUDY_FILE = "study.json"
SPEC_FILE = "study_spec.json"
GROUPS_DIR = "groups"
CURVE_POINTS = 200  # learning curves are stored as at most this many window means
GRADFLOW_SEQUENCES = 16  # evaluation sequences of the gradient-flow summaries
DEFAULT_SOLVED = "loss<0.1*baseline"
_NOT_AXES = ("seed", "task_options", "steps", "max_skips", "eval_every", "checkpoint_every", "log_every",
             "gradflow_every", "tensorboard", "lyapunov_every", "lyapunov_k")


# ----------------------------------------------------------------------------------------------- spec
@dataclasses.dataclass(frozen=True)
class StudySpec:
    """What a study trains: the base run, the grid axes, the seeds and the solved criterion.

    Attributes:
      base: an ``rnnjax.train.RunConfig`` with every setting not on an axis.
      axes: ``((name, (value, ...)), ...)``; ``name`` a ``RunConfig`` field
        (``"cell"``, ``"lr"``, ``"seq_len"``, ...) or a task option of
        ``base.task`` (``"eval_size"``, ...). Configurations are the product,
        the last axis varying fastest.
      seeds: the seeds every configuration is trained with.
      solved: criterion of a solved seed, ``"METRIC<VALUE"`` or
        ``"METRIC>VALUE"`` with METRIC ``loss``, ``accuracy`` or
        ``train_loss`` and VALUE a number or ``F*baseline`` (a fraction of the
        task's baseline loss); default ``"loss<0.1*baseline"``.
      gradflow: compute the gradient-flow summaries at initialisation and end.
      method: ``"map"`` (default, rows bitwise the separate runs) or ``"vmap"``
        (``rnnjax.sweep.run_sweep``).
    """

    base: Any
    axes: tuple
    seeds: tuple
    solved: str = DEFAULT_SOLVED
    gradflow: bool = True
    method: str = "map"

    def configurations(self) -> list[dict]:
        """The grid's points, ``[{axis: value, ...}, ...]`` (the product of the axes, last fastest)."""
        names = [name for name, _ in self.axes]
        return [dict(zip(names, values)) for values in itertools.product(*(v for _, v in self.axes))]

    def config(self, settings: Mapping[str, Any], seed: int):
        """The ``RunConfig`` of one configuration and seed."""
        fields = {f.name for f in dataclasses.fields(self.base)}
        options = dict(self.base.task_options)
        plain = {}
        for name, value in settings.items():
            if name in fields:
                plain[name] = value
            else:
                options[name] = value
        return dataclasses.replace(self.base, **plain, seed=int(seed),
                                   task_options=tuple(sorted(options.items()))).validate()

    def to_json(self) -> dict:
        return {"base": self.base.to_json(), "axes": [[n, list(v)] for n, v in self.axes], "seeds": list(self.seeds),
                "solved": self.solved, "gradflow": self.gradflow, "method": self.method}

    @classmethod
    def from_json(cls, d: dict) -> "StudySpec":
        from rnnjax.train import RunConfig

        return cls(RunConfig.from_json(d["base"]), tuple((n, tuple(v)) for n, v in d["axes"]), tuple(d["seeds"]),
                   d["solved"], bool(d["gradflow"]), d["method"])


def make_spec(base: Any, axes: Mapping[str, Sequence] | None = None, seeds: Sequence[int] = (0, 1, 2, 3, 4), *,
              solved: str = DEFAULT_SOLVED, gradflow: bool = True, method: str = "map") -> StudySpec:
    """A checked ``StudySpec`` (every error names the argument; see ``StudySpec`` for the fields).

    Raises:
      ValueError: an unknown axis name, an empty or duplicated value list, a
        value the field or task option rejects, no or duplicated seeds, a
        malformed ``solved``, an unknown ``method``.
    """
    from rnnjax import sweep
    from rnnjax.tasks import coerce_option, task_options

    base.validate()
    fields = {f.name for f in dataclasses.fields(base)}
    options = set(task_options(base.task))
    checked = []
    for name, values in (axes or {}).items():
        if name in _NOT_AXES:
            raise ValueError(f"axes: {name!r} cannot be a study axis (seeds are the `seeds` argument; "
                             f"loop settings are shared by the whole study)")
        if name not in fields and name not in options:
            raise ValueError(f"axes: unknown setting {name!r}; expected a RunConfig field "
                             f"({', '.join(sorted(fields - set(_NOT_AXES)))}) or an option of task {base.task!r} "
                             f"({', '.join(sorted(options)) or 'none'})")
        values = list(values) if not isinstance(values, (str, bytes)) else [values]
        if not values:
            raise ValueError(f"axes: {name!r} has no values")
        if name in options:
            try:
                values = [coerce_option(base.task, name, x) for x in values]
            except ValueError as err:
                raise ValueError(f"axes: {name}: {str(err).splitlines()[0]}") from None
        if len({json.dumps(x) for x in values}) != len(values):
            raise ValueError(f"axes: {name!r} has duplicate values {values}")
        checked.append((name, tuple(values)))
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in seeds):
        raise ValueError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: duplicate values in {seeds}")
    parse_solved(solved)
    if method not in sweep.METHODS:
        raise ValueError(f"method: expected one of {sweep.METHODS}, got {method!r}")
    spec = StudySpec(base, tuple(checked), tuple(int(s) for s in seeds), solved, bool(gradflow), method)
    for settings in spec.configurations():  # every value is valid for its field (named)
        try:
            spec.config(settings, spec.seeds[0])
        except ValueError as err:
            raise ValueError(f"axes: {str(err).splitlines()[0]}") from None
    return spec


_SOLVED = re.compile(r"^\s*(loss|accuracy|train_loss)\s*([<>])\s*([0-9.eE+-]+)\s*(\*\s*baseline)?\s*$")


def parse_solved(text: str) -> tuple[str, str, float, bool]:
    """``"loss<0.1*baseline"`` -> ``("loss", "<", 0.1, True)``; ValueError naming ``solved`` otherwise."""
    m = _SOLVED.match(str(text))
    if not m:
        raise ValueError(f"solved: expected METRIC<VALUE or METRIC>VALUE (METRIC loss, accuracy or train_loss; VALUE "
                         f"a number or F*baseline), got {text!r}")
    try:
        value = float(m.group(3))
    except ValueError:
        raise ValueError(f"solved: {m.group(3)!r} is not a number") from None
    return m.group(1), m.group(2), value, m.group(4) is not None


def is_solved(row: dict, solved: str) -> bool:
    """Whether one run's row meets the ``solved`` criterion (a diverged run never does)."""
    metric, op, value, relative = parse_solved(solved)
    x = row.get({"loss": "eval_loss", "accuracy": "eval_accuracy", "train_loss": "final_train_loss"}[metric])
    if x is None or (relative and row.get("baseline_loss") is None):
        return False
    threshold = value * row["baseline_loss"] if relative else value
    return x < threshold if op == "<" else x > threshold


# ------------------------------------------------------------------------------------------- statistics
def interval(values: Sequence[float | None], confidence: float = 0.95) -> dict:
    """Mean, sample standard deviation and the half-width of the Student-t confidence interval.

    ``None`` and non-finite values are left out (``n`` counts the rest).
    With one value the interval is undefined (``ci95`` None).

    Returns:
      ``{"values", "n", "mean", "std", "ci95", "low", "high"}``.
    """
    from scipy import stats

    values = list(values)
    ok = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    out = {"values": values, "n": int(ok.size), "mean": None, "std": None, "ci95": None, "low": None, "high": None}
    if ok.size == 0:
        return out
    mean = float(ok.mean())
    out["mean"] = mean
    if ok.size >= 2:
        std = float(ok.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, ok.size - 1) * std / math.sqrt(ok.size))
        out.update(std=std, ci95=half, low=mean - half, high=mean + half)
    return out


# -------------------------------------------------------------------------------------------- results
class StudyResult(NamedTuple):
    """What ``run_study`` returns (and ``DIR/study.json`` holds).

    Attributes:
      spec: the ``StudySpec``.
      configurations: one dict per configuration, in grid order: ``settings``,
        ``runs`` (every seed's row: ``seed``, ``eval_loss``, ``eval_accuracy``,
        ``final_train_loss``, ``status``, ``solved``, ``command``, gradient-flow
        summaries ``gradflow_init``/``gradflow_end``, ``curve``), ``metrics``
        (per metric ``interval``), ``solved_fraction``, ``diverged``,
        ``gradflow`` (per summary and moment an ``interval``), ``baseline_loss``.
      groups: per group ``{"id", "runs", "status", "seconds", "error"}``.
      timing: ``{"total_s", "trained_s"}`` (trained: this call's training, resumed groups excluded).
    """

    spec: StudySpec
    configurations: list
    groups: list
    timing: dict


def _group_id(configs: Sequence[Any]) -> str:
    text = json.dumps([c.to_json() for c in configs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_groups(spec: StudySpec) -> list[tuple[str, list]]:
    """The study's groups in order: ``[(id, [(configuration index, seed, RunConfig), ...]), ...]``."""
    from rnnjax.sweep import group_key

    groups: dict[Any, list] = {}
    for ci, settings in enumerate(spec.configurations()):
        for seed in spec.seeds:
            config = spec.config(settings, seed)
            groups.setdefault(group_key(config), []).append((ci, seed, config))
    return [(_group_id([c for _, _, c in members]), members) for members in groups.values()]


def _curve(losses: np.ndarray) -> list:
    """Per-step training losses as at most ``CURVE_POINTS`` ``[step, window mean]`` pairs (non-finite left out)."""
    steps = losses.shape[0]
    width = max(1, math.ceil(steps / CURVE_POINTS))
    out = []
    for start in range(0, steps, width):
        window = losses[start:start + width]
        window = window[np.isfinite(window)]
        if window.size:
            out.append([start + (min(width, steps - start) - 1) / 2 + 1, float(window.mean())])
    return out


def _gradflow_summarizer(trainer) -> Callable[[Any], dict] | None:
    """A function ``params -> {decay_rate, grad_ratio, lambda_max}`` for the trainer's model, or None.

    ``decay_rate``: ``gradflow.decay_rate`` of the model's ``grad_profile`` (its forward row) on the first
    ``GRADFLOW_SEQUENCES`` evaluation sequences; ``grad_ratio``: ``||dL/dc_0|| / ||dL/dc_{T-1}||`` of that
    profile; ``lambda_max``: the top Lyapunov exponent of the cell driven by the first evaluation sequence
    (cells only, not bidirectional or dropout layers). None for patterns without a per-step profile.
    """
    import jax
    import jax.numpy as jnp

    from rnnjax import gradflow
    from rnnjax._cells import Cell
    from rnnjax.models import grad_profile, read_tokens

    batch = jax.tree.map(lambda a: a[:GRADFLOW_SEQUENCES], trainer.task.eval_batch())
    model = trainer.model
    try:
        jax.eval_shape(lambda p: grad_profile(model, p, batch), jax.eval_shape(model.init, jax.random.key(0)))
    except (ValueError, TypeError):
        return None  # one_to_many / seq2seq: no per-step profile of the loss
    cell = model.cell if isinstance(model.cell, Cell) else None

    @jax.jit
    def summary(params):
        profile = grad_profile(model, params, batch)
        forward = profile if profile.ndim == 1 else profile[0]
        out = {"decay_rate": gradflow.decay_rate(forward), "grad_ratio": forward[0] / forward[-1]}
        if cell is not None:
            dtype = jnp.result_type(*jax.tree.leaves(params.cell))
            # what the cell reads: token ids (sentiment, wordlm) one-hot or through the model's embedding
            xs = read_tokens(batch.inputs[:1], model.input_size or cell.input_size, getattr(params, "embedding", None),
                             dtype=dtype)
            xs = xs[0].astype(dtype)
            out["lambda_max"] = gradflow.lyapunov_spectrum(cell, params.cell, xs, k=1)[0]
        return out

    def summarize(params):
        values = jax.device_get(summary(params))
        return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}

    return summarize


def _train_group(spec: StudySpec, members: list, progress: Callable[[int], None] | None) -> list[dict]:
    """Train one group; one row per member (in order)."""
    import jax

    from rnnjax.sweep import run_sweep, variant_key
    from rnnjax.train import build

    configs = [c for _, _, c in members]
    result = run_sweep(configs, method=spec.method, progress=progress)
    rows = []
    for (ci, seed, config), row, losses in zip(members, result.rows, np.asarray(result.metrics["loss"])):
        row = {k: v for k, v in row.items() if k != "config"}
        row.update(configuration=ci, diverged=row["status"] != "completed",
                   command="rnnjax " + shlex.join(config.train_argv(f"runs/c{ci}_seed{seed}")),
                   curve=_curve(np.where(np.asarray(result.metrics["halted"])[len(rows)], np.nan, losses)))
        row["solved"] = is_solved(row, spec.solved)
        rows.append(row)
    if spec.gradflow:
        by_variant: dict[Any, list[int]] = {}
        for i, c in enumerate(configs):
            by_variant.setdefault(variant_key(c), []).append(i)
        for key, idx in by_variant.items():
            trainer = build(key)
            start = [jax.tree.map(lambda x, i=i: x[i], result.initial_params) for i in idx]
            end = [jax.tree.map(lambda x, i=i: x[i], result.states.params) for i in idx]
            summarize = _gradflow_summarizer(trainer)
            for i, a, b in zip(idx, start, end):
                rows[i]["gradflow_init"] = None if summarize is None else summarize(a)
                rows[i]["gradflow_end"] = None if summarize is None else summarize(b)
    return rows


def _summarise(spec: StudySpec, rows_by_config: dict[int, list]) -> list[dict]:
    out = []
    for ci, settings in enumerate(spec.configurations()):
        runs = sorted(rows_by_config.get(ci, []), key=lambda r: spec.seeds.index(r["seed"]))
        finished = [r for r in runs if "eval_loss" in r]
        entry = {"settings": settings, "runs": runs, "seeds": len(runs),
                 "baseline_loss": next((r["baseline_loss"] for r in finished), None)}
        ok = [r for r in finished if not r["diverged"]]
        entry["metrics"] = {
            name: interval([r[name] if not r["diverged"] else None for r in finished])
            for name in ("eval_loss", "eval_accuracy", "final_train_loss")
            if any(r.get(name) is not None for r in finished)
        }
        entry["diverged"] = sum(r["diverged"] for r in finished)
        entry["errors"] = [r["error"] for r in runs if "error" in r]
        entry["solved_fraction"] = (sum(r["solved"] for r in finished) / len(finished)) if finished else None
        flow = {}
        for moment in ("init", "end"):
            summaries = [r.get(f"gradflow_{moment}") for r in ok]
            if any(s is not None for s in summaries):
                names = sorted({k for s in summaries if s for k in s})
                flow[moment] = {k: interval([s.get(k) if s else None for s in summaries]) for k in names}
        entry["gradflow"] = flow
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------- runner
def run_study(
    base: Any,
    axes: Mapping[str, Sequence] | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    *,
    out: str | os.PathLike | None = None,
    solved: str = DEFAULT_SOLVED,
    gradflow: bool = True,
    method: str = "map",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> StudyResult:
    """Train every configuration of the grid with every seed; summarise each metric with a 95 % CI.

    Args:
      base, axes, seeds, solved, gradflow, method: the study (``make_spec``;
        default five seeds 0-4).
      out: directory for the results (``study.json``, ``study.csv``,
        ``study_runs.csv``, ``study.md``, figures, and ``groups/`` for resume);
        None keeps everything in memory. Locked for the whole call. Finished
        groups found there are loaded, not retrained; a different study there
        raises before any work.
      progress: a tqdm progress bar of groups and steps on stderr (off when
        stderr is not a terminal).
      log: ``print``-like callback for one line per group.

    Returns:
      A ``StudyResult``.

    Raises:
      ValueError: a bad argument (named), or ``out`` holding another study or other files.
      rnnjax.rundir.DirectoryBusy: another process holds ``out``.
    """
    spec = make_spec(base, axes, seeds, solved=solved, gradflow=gradflow, method=method)
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    lock = None
    if out is not None:
        out = os.fspath(out)
        _check_directory(out, spec)
        from rnnjax.rundir import RunLock

        lock = RunLock(out)
    try:
        if out is not None:
            _check_directory(out, spec)  # again, under the lock
        groups = plan_groups(spec)
        if lock is not None:
            from rnnjax.rundir import remove_stale_temporaries, write_json

            lock.record()
            os.makedirs(os.path.join(out, GROUPS_DIR), exist_ok=True)
            remove_stale_temporaries(os.path.join(out, GROUPS_DIR))
            write_json(os.path.join(out, SPEC_FILE), spec.to_json())
        rows_by_config: dict[int, list] = {}
        group_log = []
        trained_s = 0.0
        bar = _progress_bar(len(groups) * spec.base.steps, enabled=progress)
        try:
            for gi, (gid, members) in enumerate(groups):
                path = None if out is None else os.path.join(out, GROUPS_DIR, f"{gid}.json")
                label = _group_label(spec, members)
                if path is not None and os.path.exists(path):
                    with open(path) as f:
                        record = json.load(f)
                    say(f"study: group {gi + 1}/{len(groups)} ({label}): done before, loaded")
                    bar.update(spec.base.steps)
                else:
                    bar.set_description(f"group {gi + 1}/{len(groups)}")
                    say(f"study: group {gi + 1}/{len(groups)} ({label}): training {len(members)} runs")
                    t = time.perf_counter()
                    seen = [0]

                    def advance(done, seen=seen):
                        bar.update(done - seen[0])
                        seen[0] = done

                    try:
                        rows = _train_group(spec, members, advance)
                        status, error = "completed", None
                    except Exception as err:  # noqa: BLE001 -- a failing group is recorded; the study goes on
                        error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                        say(f"study: group {gi + 1} failed: {error}")
                        rows = [{"configuration": ci, "seed": seed, "error": error, "diverged": True, "solved": False}
                                for ci, seed, _ in members]
                        status = "failed"
                        bar.update(spec.base.steps - seen[0])
                    seconds = time.perf_counter() - t
                    trained_s += seconds
                    record = {"id": gid, "status": status, "error": error, "seconds": seconds, "rows": rows}
                    if path is not None and status == "completed":
                        write_json(path, record)  # atomic: a killed study finds whole groups or none
                for row in record["rows"]:
                    rows_by_config.setdefault(row["configuration"], []).append(row)
                group_log.append({"id": gid, "runs": len(members), "status": record["status"],
                                  "seconds": record["seconds"], "error": record["error"]})
        finally:
            bar.close()
        result = StudyResult(spec, _summarise(spec, rows_by_config), group_log,
                             {"total_s": time.perf_counter() - t0, "trained_s": trained_s})
        if out is not None:
            write_results(result, out)
        return result
    finally:
        if lock is not None:
            lock.release()


def _check_directory(out: str, spec: StudySpec) -> None:
    """Refuse a directory that holds another study or files that are not a study's."""
    if not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise ValueError(f"out: {out} exists and is not a directory")
    spec_path = os.path.join(out, SPEC_FILE)
    if os.path.exists(spec_path):
        with open(spec_path) as f:
            stored = json.load(f)
        if stored != spec.to_json():
            diff = sorted(k for k in set(stored) | set(spec.to_json()) if stored.get(k) != spec.to_json().get(k))
            base_diff = []
            if "base" in diff:
                old, new = stored.get("base", {}), spec.to_json()["base"]
                base_diff = [f"{k} {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
                             if old.get(k) != new.get(k)]
            detail = "; ".join(base_diff) if base_diff else ", ".join(diff)
            raise ValueError(f"out: {out} holds a different study ({detail}); use a new directory")
        return
    entries = [e for e in os.listdir(out) if e != ".lock"]
    if entries:
        raise ValueError(f"out: {out} is not empty and holds no study ({SPEC_FILE} missing); use a new directory")


class _NoBar:
    def update(self, n):
        pass

    def set_description(self, text):
        pass

    def close(self):
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", file=sys.stderr, disable=None, dynamic_ncols=True)


def _group_label(spec: StudySpec, members: list) -> str:
    names = [n for n, _ in spec.axes]
    configs = spec.configurations()
    shown = sorted({", ".join(f"{n}={configs[ci][n]}" for n in names) for ci, _, _ in members})
    text = "; ".join(shown) if names else spec.base.cell
    return text if len(text) < 100 else text[:97] + "..."


# ---------------------------------------------------------------------------------------------- outputs
def _fmt(x, digits=4):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _mean_ci(stat: dict | None, digits: int = 4) -> str:
    if not stat or stat["mean"] is None:
        return "–"
    if stat["ci95"] is None:
        return f"{_fmt(stat['mean'], digits)} (n={stat['n']})"
    return f"{_fmt(stat['mean'], digits)} ± {_fmt(stat['ci95'], 2)}"


def to_markdown(result: StudyResult) -> str:
    """The study as a markdown table: one row per configuration (mean ± 95 % CI half-width, per-seed values)."""
    spec = result.spec
    names = [n for n, _ in spec.axes] or ["cell"]
    has_acc = any("eval_accuracy" in c["metrics"] for c in result.configurations)
    head = names + ["eval loss (mean ± CI95)"] + (["eval accuracy"] if has_acc else []) + \
        ["per seed", "solved", "diverged", "λ_max init → end", "decay rate init → end"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in result.configurations:
        settings = c["settings"] or {"cell": spec.base.cell}
        m = c["metrics"]
        per_seed = ", ".join(_fmt(r.get("eval_loss"), 3) if not r.get("diverged") else "div"
                             for r in c["runs"])
        flow = c["gradflow"]

        def moments(name):
            a = flow.get("init", {}).get(name)
            b = flow.get("end", {}).get(name)
            if not a and not b:
                return "–"
            return f"{_mean_ci(a, 3)} → {_mean_ci(b, 3)}"

        solved = "–" if c["solved_fraction"] is None else f"{round(c['solved_fraction'] * c['seeds'])}/{c['seeds']}"
        cells = [_fmt(settings.get(n)) for n in names] + [_mean_ci(m.get("eval_loss"))]
        if has_acc:
            cells.append(_mean_ci(m.get("eval_accuracy")))
        cells += [per_seed, solved, str(c["diverged"]), moments("lambda_max"), moments("decay_rate")]
        lines.append("| " + " | ".join(cells) + " |")
    base = spec.base
    swept = {n for n, _ in spec.axes}
    shared = [f"{label} {value}" for name, label, value in (
        ("batch_size", "batch", base.batch_size), ("hidden", "hidden", base.hidden), ("lr", "lr", f"{base.lr:g}"),
        ("clip", "clip", f"{base.clip:g}"), ("optimizer", "", base.optimizer),
        ("momentum", "momentum", f"{base.momentum:g}")) if name not in swept and not (name == "momentum"
                                                                                   and not base.momentum)]
    baselines = {c["baseline_loss"] for c in result.configurations}
    baseline = (f"baseline loss {_fmt(next(iter(baselines)))}" if len(baselines) == 1 else
                "baseline loss per row")
    lines.append("")
    lines.append(f"Task {base.task}, {len(spec.seeds)} seeds ({', '.join(map(str, spec.seeds))}), "
                 f"{base.steps} steps, {', '.join(x.strip() for x in shared)}; solved: {spec.solved}; "
                 f"{baseline}. "
                 "CI95: half-width of the Student-t 95 % interval over seeds; diverged seeds are excluded "
                 "from the mean and count as unsolved.")
    return "\n".join(lines) + "\n"


def write_results(result: StudyResult, out: str) -> None:
    """Write ``study.json``, ``study.csv`` (per configuration), ``study_runs.csv`` (per seed), ``study.md`` and
    the figures (``learning_curves.png``; ``metric_vs_<axis>.png`` against ``metric_axis``, or
    ``metric_vs_configuration.png``) to ``out``."""
    from rnnjax.rundir import write_json

    report = {"spec": result.spec.to_json(), "configurations": result.configurations, "groups": result.groups,
              "timing": result.timing, "machine": _machine()}
    write_json(os.path.join(out, STUDY_FILE), report)
    names = [n for n, _ in result.spec.axes]
    with open(os.path.join(out, "study.csv"), "w", newline="") as f:
        w = csv.writer(f)
        metrics = ("eval_loss", "eval_accuracy", "final_train_loss")
        flows = [(m, k) for m in ("init", "end") for k in ("decay_rate", "lambda_max", "grad_ratio")]
        w.writerow(names + [f"{m}_{s}" for m in metrics for s in ("mean", "std", "ci95", "n")] +
                   ["solved_fraction", "diverged"] + [f"{k}_{m}_mean" for m, k in flows])
        for c in result.configurations:
            row = [c["settings"][n] for n in names]
            for m in metrics:
                stat = c["metrics"].get(m) or {}
                row += [stat.get("mean"), stat.get("std"), stat.get("ci95"), stat.get("n")]
            row += [c["solved_fraction"], c["diverged"]]
            row += [((c["gradflow"].get(m) or {}).get(k) or {}).get("mean") for m, k in flows]
            w.writerow(["" if x is None else x for x in row])
    with open(os.path.join(out, "study_runs.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names + ["seed", "eval_loss", "eval_accuracy", "final_train_loss", "status", "solved",
                            "decay_rate_init", "decay_rate_end", "lambda_max_init", "lambda_max_end", "command"])
        for c in result.configurations:
            for r in c["runs"]:
                gi, ge = r.get("gradflow_init") or {}, r.get("gradflow_end") or {}
                row = [c["settings"][n] for n in names] + [
                    r["seed"], r.get("eval_loss"), r.get("eval_accuracy"), r.get("final_train_loss"),
                    r.get("status", "error"), r.get("solved"), gi.get("decay_rate"), ge.get("decay_rate"),
                    gi.get("lambda_max"), ge.get("lambda_max"), r.get("command", r.get("error"))]
                w.writerow(["" if x is None else x for x in row])
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(to_markdown(result))
    plot_learning_curves(result, os.path.join(out, "learning_curves.png"))
    axis = metric_axis(result.spec)
    plot_metric(result, axis, os.path.join(out, f"metric_vs_{axis or 'configuration'}.png"))


def _machine() -> dict:
    import platform

    import jax

    return {"platform": jax.devices()[0].platform, "devices": jax.device_count(), "cpus": os.cpu_count(),
            "jax": jax.__version__, "python": platform.python_version()}


def metric_axis(spec: StudySpec) -> str | None:
    """The axis the metric figure is drawn against: ``seq_len`` if swept, else the first numeric axis, else None."""
    names = dict(spec.axes)
    if "seq_len" in names:
        return "seq_len"
    for name, values in spec.axes:
        if len(values) > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return name
    return None


def _band(ax, x, stats_list, label, color=None):
    x = np.asarray(x, dtype=float)
    mean = np.array([s["mean"] if s and s["mean"] is not None else np.nan for s in stats_list])
    low = np.array([s["low"] if s and s["low"] is not None else m for s, m in zip(stats_list, mean)])
    high = np.array([s["high"] if s and s["high"] is not None else m for s, m in zip(stats_list, mean)])
    line, = ax.plot(x, mean, marker="o", label=label, color=color)
    ax.fill_between(x, low, high, alpha=0.2, color=line.get_color())


def plot_metric(result: StudyResult, axis: str | None, path: str, metric: str = "eval_loss") -> None:
    """``metric`` (mean with its 95 % CI band) against ``axis``, one line per combination of the other axes;
    with ``axis=None`` one point with its CI bar (and the seeds as dots) per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if axis is None:  # no numeric axis: one point with its CI bar per configuration
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(result.configurations) + 2), 4.2))
        labels = [", ".join(f"{v}" for v in c["settings"].values()) or result.spec.base.cell
                  for c in result.configurations]
        for i, c in enumerate(result.configurations):
            stat = c["metrics"].get(metric) or {}
            if stat.get("mean") is None:
                continue
            err = stat["ci95"] or 0.0
            ax.errorbar([i], [stat["mean"]], yerr=[[min(err, stat["mean"] * 0.999) if metric.endswith("loss")
                                                    else err], [err]], fmt="o", capsize=4)
            ax.plot([i] * len(stat["values"]), [v if v is not None else np.nan for v in stat["values"]], ".",
                    color="gray", alpha=0.6)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        baseline = result.configurations[0]["baseline_loss"]
        if metric == "eval_loss" and baseline is not None:
            ax.axhline(baseline, color="gray", ls="--", lw=1, label="baseline")
            ax.legend(fontsize=7)
        ax.set_ylabel(f"{metric} (mean, 95 % CI; dots: seeds)")
        ax.set_title(f"{result.spec.base.task}: {metric} per configuration", fontsize=10)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    others = [n for n, _ in result.spec.axes if n != axis]
    lines: dict[str, list] = {}
    for c in result.configurations:
        label = ", ".join(f"{n}={c['settings'][n]}" for n in others) or result.spec.base.cell
        lines.setdefault(label, []).append(c)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, configs in lines.items():
        configs = sorted(configs, key=lambda c: c["settings"][axis])
        _band(ax, [c["settings"][axis] for c in configs], [c["metrics"].get(metric) for c in configs], label)
        for c in configs:  # a mean over the survivors only: say so on the point
            stat = c["metrics"].get(metric) or {}
            if c["diverged"] and stat.get("mean") is not None:
                ax.annotate(f"{c['diverged']}/{c['seeds']} diverged", (c["settings"][axis], stat["mean"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
    baseline = result.configurations[0]["baseline_loss"]
    if metric == "eval_loss" and baseline is not None and len({c["baseline_loss"] for c in result.configurations}) == 1:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label="baseline")
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{metric} (mean, 95 % CI over {len(result.spec.seeds)} seeds)")
    means = [(c["metrics"].get(metric) or {}).get("mean") for c in result.configurations]
    means = [m for m in means if m is not None]
    if metric.endswith("loss") and means and min(means) > 0:
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5 * min(means))  # a band reaching below zero does not stretch the log axis
    ax.set_title(f"{result.spec.base.task}: {metric} against {axis}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_learning_curves(result: StudyResult, path: str) -> None:
    """Training loss against step per configuration: mean over seeds with its 95 % CI band (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = [n for n, _ in result.spec.axes]
    positive, lowest = True, math.inf
    for c in result.configurations:
        curves = [r["curve"] for r in c["runs"] if r.get("curve")]
        if not curves:
            continue
        steps = sorted({p[0] for cur in curves for p in cur})
        table = np.full((len(curves), len(steps)), np.nan)
        index = {s: i for i, s in enumerate(steps)}
        for k, cur in enumerate(curves):
            for s, v in cur:
                table[k, index[s]] = v
        n = np.sum(np.isfinite(table), axis=0)
        mean = np.nanmean(np.where(np.isfinite(table), table, np.nan), axis=0)
        std = np.nanstd(table, axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
        half = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * std / np.sqrt(np.maximum(n, 1)), 0.0)
        label = ", ".join(f"{k}={c['settings'][k]}" for k in names) or result.spec.base.cell
        line, = ax.plot(steps, mean, lw=1.2, label=label)
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2, color=line.get_color())
        positive = positive and bool(np.all(mean[np.isfinite(mean)] > 0))
        finite = mean[np.isfinite(mean)]
        if finite.size:
            lowest = min(lowest, float(finite.min()))
    baseline = result.configurations[0]["baseline_loss"] if result.configurations else None
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label="baseline")
    if positive and math.isfinite(lowest):
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5 * lowest)  # a band reaching below zero does not stretch the log axis
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (mean, 95 % CI over {len(result.spec.seeds)} seeds)")
    ax.set_title(f"{result.spec.base.task}: learning curves", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load(out: str | os.PathLike) -> dict:
    """The ``study.json`` report of a finished study directory."""
    with open(os.path.join(os.fspath(out), STUDY_FILE)) as f:
        return json.load(f)


__all__ = ["DEFAULT_SOLVED", "StudyResult", "StudySpec", "interval", "is_solved", "load", "make_spec",
           "parse_solved", "plan_groups", "plot_learning_curves", "plot_metric", "run_study", "to_markdown",
           "write_results"]
