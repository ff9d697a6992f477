"""Hyper-parameter search on Optuna, with the trials of a batch trained as ONE compiled program.

Optuna (Akiba et al., 2019) proposes hyper-parameters (samplers: TPE, random,
grid), stops poor trials early (pruners: median, ASHA) and keeps the study in
a storage that many worker processes on many machines share (a journal file,
SQLite, PostgreSQL, MySQL). What rnnjax adds is the training: a worker asks
Optuna for ``pack`` trials at a time, groups them by shape
(``rnnjax.sweep.group_key``: trials differing only in values — learning rate,
init gain, clipping, seed — share one program) and trains each group with
``rnnjax.sweep.run_sweep``: one compilation for the group, and every row bit
for bit the separate ``rnnjax train`` run of that trial (``method="map"``).
After every evaluation period the worker reports each row's evaluation loss
to its trial (``trial.report``) and asks the pruner (``trial.should_prune``);
a pruned row stops updating inside the compiled program (a per-row mask,
``run_sweep(on_evaluate=...)``) and is told ``PRUNED`` (its value: the last
reported loss); a row that diverged (``max_skips`` consecutive non-finite
steps) or whose loss is not finite is told ``FAIL`` with the reason in the
trial's ``fail_reason`` attribute. ``trials`` is the total across all workers:
before each ``study.ask`` the worker counts the study's trials that are
finished or running (``optuna.study.MaxTrialsCallback``'s count, taken at ask
time rather than after each tell), so concurrent workers overshoot by at most
one trial each (the race between counting and asking).

Example::

    base = RunConfig(task="adding", cell="irnn", hidden=16, seq_len=50, steps=200, eval_every=50)
    space = parse_space("lr=loguniform:1e-4:1e-1,init_gain=uniform:0.5:2")
    study = create_study(open_storage(None, "runs/search"), "demo", make_sampler("tpe", space, seed=0),
                         make_pruner("median"), space=space, base=base)
    result = run_search(study, base, space, trials=16, pack=4, out="runs/search")
    write_results(study, "runs/search")   # search.json, search.md, optimisation figures

References:
  Akiba, Sano, Yanase, Ohta & Koyama, "Optuna: A next-generation
  hyperparameter optimization framework", KDD 2019.
  Li, Jamieson, Rostamizadeh et al., "A system for massively parallel
  hyperparameter tuning" (ASHA), MLSys 2020.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import socket
import time
import typing
from typing import Any, Callable, NamedTuple

import numpy as np

KINDS = ("uniform", "loguniform", "int", "logint", "choice")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "asha")
DEFAULT_STUDY = "rnnjax-search"
JOURNAL = "study.journal"  # the embedded default storage: DIR/study.journal
FIGURES = ("optimization_history", "param_importances", "parallel_coordinate")
_NOT_SEARCHABLE = ("task", "task_options")  # and every loop field (RunConfig.loop_fields())


class SearchResult(NamedTuple):
    """What ``run_search`` returns (this worker's share of the study).

    Attributes:
      trials: one dict per trial this worker ran: ``number``, ``params``,
        ``state`` (``"COMPLETE"``, ``"PRUNED"`` or ``"FAIL"``), ``value``,
        ``steps``, ``command``, ``fail_reason``.
      packs: one dict per compiled program: ``trials`` (numbers), ``timing``
        (``run_sweep``'s seconds).
      wall_s: seconds this worker spent in ``run_search``.
    """

    trials: list
    packs: list
    wall_s: float


# --------------------------------------------------------------------------------------------- the space
def searchable_fields() -> dict[str, type]:
    """``RunConfig`` fields a search may vary, with their scalar type (``int | None`` -> ``int``)."""
    from rnnjax.train import RunConfig

    hints = typing.get_type_hints(RunConfig)
    loop = set(RunConfig.loop_fields())
    out = {}
    for f in dataclasses.fields(RunConfig):
        if f.name in loop or f.name in _NOT_SEARCHABLE:
            continue
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        out[f.name] = args[0] if args else hint
    return out


def parse_space(text: str) -> dict:
    """``"lr=loguniform:1e-4:1e-1,init_gain=uniform:0.5:2,hidden=choice:32,64"`` -> Optuna distributions.

    Kinds: ``uniform:LO:HI``, ``loguniform:LO:HI`` (float fields), ``int:LO:HI[:STEP]``,
    ``logint:LO:HI`` (integer fields, bounds included), ``choice:A,B,...`` (any field; the
    values after ``choice:`` run to the next ``NAME=``). Names are ``RunConfig`` fields that change a
    run's result (``searchable_fields()``; not ``task`` or loop fields such as ``steps``).

    Returns:
      ``{name: optuna.distributions.BaseDistribution}`` in the order written.

    Raises:
      ValueError: starting with ``"space: "`` and naming the parameter: an unknown name, a duplicate, an
        unknown kind, a malformed or empty range, a value of the wrong type.
    """
    import optuna

    fields = searchable_fields()
    items: list[list[str]] = []
    for token in str(text).split(","):
        token = token.strip()
        if not token:
            continue
        if re.match(r"^[A-Za-z_][\w-]*\s*=", token):
            items.append([token])
        elif items and items[-1][0].split("=", 1)[1].strip().startswith("choice:"):
            items[-1].append(token)  # another value of the choice before
        else:
            raise ValueError(f"space: expected NAME=KIND:ARGS, got {token!r}")
    if not items:
        raise ValueError(f"space: expected NAME=KIND:ARGS[,NAME=KIND:ARGS...], got {text!r}")
    space = {}
    for item in items:
        name, spec = (s.strip() for s in item[0].split("=", 1))
        name = name.replace("-", "_")
        if name not in fields:
            raise ValueError(f"space: unknown parameter {name!r}; expected one of {', '.join(sorted(fields))}")
        if name in space:
            raise ValueError(f"space: parameter {name!r} given twice")
        kind, _, rest = spec.partition(":")
        kind = kind.strip()
        if kind not in KINDS:
            raise ValueError(f"space: {name}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        field_type = fields[name]
        if kind == "choice":
            raw = [rest.strip()] + [s.strip() for s in item[1:]]
            if not raw or not all(raw):
                raise ValueError(f"space: {name}: expected choice:A,B,..., got {','.join(item)!r}")
            values = [_convert(name, field_type, r) for r in raw]
            if len(set(values)) != len(values):
                raise ValueError(f"space: {name}: duplicate choices in {','.join(raw)!r}")
            space[name] = optuna.distributions.CategoricalDistribution(values)
            continue
        parts = rest.split(":")
        want = {"uniform": 2, "loguniform": 2, "int": (2, 3), "logint": 2}[kind]
        if len(parts) not in ((want,) if isinstance(want, int) else want) or not all(p.strip() for p in parts):
            form = {"uniform": "uniform:LO:HI", "loguniform": "loguniform:LO:HI", "int": "int:LO:HI[:STEP]",
                    "logint": "logint:LO:HI"}[kind]
            raise ValueError(f"space: {name}: expected {form}, got {spec!r}")
        if kind in ("uniform", "loguniform"):
            if field_type is not float:
                raise ValueError(f"space: {name}: {kind} needs a float parameter; {name} is "
                                 f"{field_type.__name__} (use int:LO:HI or choice:...)")
            lo, hi = (_number(name, p, float) for p in parts)
            if not lo < hi or (kind == "loguniform" and lo <= 0):
                raise ValueError(f"space: {name}: expected {'0 < ' if kind == 'loguniform' else ''}LO < HI, "
                                 f"got {spec!r}")
            space[name] = optuna.distributions.FloatDistribution(lo, hi, log=kind == "loguniform")
        else:
            if field_type is not int:
                raise ValueError(f"space: {name}: {kind} needs an integer parameter; {name} is "
                                 f"{field_type.__name__} (use uniform:LO:HI or choice:...)")
            lo, hi, *step = (_number(name, p, int) for p in parts)
            step = step[0] if step else 1
            if not lo < hi or step < 1 or (kind == "logint" and lo < 1):
                raise ValueError(f"space: {name}: expected {'1 <= ' if kind == 'logint' else ''}LO < HI"
                                 f"{' and STEP >= 1' if kind == 'int' else ''}, got {spec!r}")
            space[name] = optuna.distributions.IntDistribution(lo, hi, step=step, log=kind == "logint")
    return space


def format_space(space: dict) -> str:
    """The inverse of ``parse_space`` (a canonical text, stored with the study)."""
    import optuna

    parts = []
    for name, d in space.items():
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            parts.append(f"{name}=choice:" + ",".join(_text(c) for c in d.choices))
        elif isinstance(d, optuna.distributions.FloatDistribution):
            parts.append(f"{name}={'loguniform' if d.log else 'uniform'}:{d.low!r}:{d.high!r}")
        else:
            step = "" if d.log or d.step == 1 else f":{d.step}"
            parts.append(f"{name}={'logint' if d.log else 'int'}:{d.low}:{d.high}{step}")
    return ",".join(parts)


def check_space(base: Any, space: dict) -> None:
    """Raise ``ValueError`` (``"space: NAME=VALUE: ..."``) if a bound or choice of ``space`` is not a valid run.

    Every bound and choice is put into ``base`` alone and validated (``RunConfig.validate``; an unknown cell
    or optimizer is caught here too), so no trial fails for a value its range allowed.
    """
    import optuna

    from rnnjax._registry import CELLS

    for name, d in space.items():
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            values = list(d.choices)
        else:
            values = [d.low, d.high]
        for v in values:
            if name == "cell" and v not in CELLS:
                raise ValueError(f"space: cell={v}: unknown cell; expected one of {', '.join(sorted(CELLS))}")
            try:
                dataclasses.replace(base, **{name: v}).validate()
            except ValueError as err:
                raise ValueError(f"space: {name}={_text(v)}: {str(err).splitlines()[0]}") from None


def grid_size(space: dict) -> int | None:
    """Number of points of ``space`` as a grid, or None if a parameter is continuous."""
    values = _grid_values(space)
    return None if values is None else math.prod(len(v) for v in values.values())


# ------------------------------------------------------------------------- Optuna: sampler, pruner, storage
def make_sampler(name: str, space: dict, *, seed: int | None = None) -> Any:
    """An Optuna sampler: ``"tpe"`` (``TPESampler``, constant liar for batches of running trials),
    ``"random"`` or ``"grid"`` (every parameter a choice or an integer range).

    Raises:
      ValueError: an unknown name (``"sampler: ..."``), or a continuous parameter with ``"grid"``.
    """
    import optuna

    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    values = _grid_values(space)
    if values is None:
        bad = next(k for k, d in space.items() if isinstance(d, optuna.distributions.FloatDistribution))
        raise ValueError(f"sampler: grid needs every parameter as choice:... or an integer range; {bad} is continuous")
    return optuna.samplers.GridSampler(values, seed=seed)


def make_pruner(name: str, *, startup: int = 2, min_steps: int = 1) -> Any:
    """An Optuna pruner: ``"none"`` (``NopPruner``), ``"median"`` (``MedianPruner``: stop a trial whose
    best loss so far is worse than the median of the completed trials at the same step, once ``startup``
    trials have completed) or ``"asha"`` (``SuccessiveHalvingPruner``, rungs from ``min_steps`` training
    steps on, reduction factor 4).

    Raises:
      ValueError: an unknown name (``"pruner: ..."``) or a non-positive ``startup``/``min_steps``.
    """
    import optuna

    if name not in PRUNERS:
        raise ValueError(f"pruner: unknown pruner {name!r}; expected one of {', '.join(PRUNERS)}")
    for arg, value in (("startup", startup), ("min_steps", min_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if arg == "startup" else 1):
            raise ValueError(f"{arg}: expected an integer >= {0 if arg == 'startup' else 1}, got {value!r}")
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_steps, reduction_factor=4)


def open_storage(storage: str | None, out: str) -> Any:
    """The Optuna storage of ``storage``: None -> the journal file ``out/study.journal`` (created with
    ``out``); a URL (``sqlite:///f.db``, ``postgresql://user@host:port/db``, ``mysql://...``) -> an
    ``RDBStorage``, connected now (``postgresql://`` through psycopg2 when psycopg 3 is absent); any
    other text -> a journal file at that path (on a shared
    filesystem for several machines).

    Raises:
      ValueError: ``"storage: ..."`` when the database cannot be reached or the URL is malformed (the
        cause's first line; passwords are not shown).
    """
    import optuna

    if storage is None or "://" not in storage:
        path = os.path.join(out, JOURNAL) if storage is None else storage
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            if storage is not None:
                raise ValueError(f"storage: no directory {folder!r} for the journal file {path!r}")
            os.makedirs(folder, exist_ok=True)
        if os.path.isdir(path):
            raise ValueError(f"storage: {path!r} is a directory, expected a journal file")
        try:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        except OSError as err:
            raise ValueError(f"storage: cannot open journal file {path!r}: {err.strerror}") from None
    engine = {}
    if storage.startswith(("postgresql", "mysql")):
        engine = {"connect_args": {"connect_timeout": 10}}
    url = storage
    if url.startswith("postgresql://") and _postgres_driver() == "psycopg2":
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]  # SQLAlchemy 2.1 defaults to psycopg 3
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except Exception as err:  # sqlalchemy's ArgumentError/OperationalError, a missing driver module, ...
            # Workers starting together on a new database race to create Optuna's tables; the loser sees a
            # duplicate key or table (IntegrityError/ProgrammingError) and finds the tables on a retry.
            if type(err).__name__ in ("IntegrityError", "ProgrammingError") and attempt < 4:
                time.sleep(0.5 * (attempt + 1))
                continue
            lines = [line for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
            raise ValueError(f"storage: cannot open {redact(storage)}: {lines[0].strip()}") from None


def redact(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db`` (for messages and search.json)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def create_study(storage: Any, name: str, sampler: Any, pruner: Any, *, space: dict, base: Any) -> Any:
    """Create, or join, the minimising study ``name`` in ``storage`` (``load_if_exists``).

    The first worker stores the space and the base configuration in the study's user attributes; a
    worker joining with a different space or base configuration is refused (its trials would not be
    comparable).

    Raises:
      ValueError: ``"space: ..."`` or ``"config: ..."`` when they differ from the study's.
    """
    import optuna

    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="minimize", load_if_exists=True)
    mine = {"space": format_space(space), "config": base.to_json()}
    stored = study.user_attrs
    if "rnnjax_space" not in stored:
        study.set_user_attr("rnnjax_space", mine["space"])
        study.set_user_attr("rnnjax_config", mine["config"])
        return study
    if stored["rnnjax_space"] != mine["space"]:
        raise ValueError(f"space: study {name!r} searches {stored['rnnjax_space']!r}, not {mine['space']!r}")
    theirs = stored.get("rnnjax_config") or {}
    diff = sorted(k for k in set(theirs) | set(mine["config"]) if theirs.get(k) != mine["config"].get(k))
    if diff:
        raise ValueError(f"config: study {name!r} was started with other settings; they differ in {diff}")
    return study


# ----------------------------------------------------------------------------------------------- search
def run_search(
    study: Any,
    base: Any,
    space: dict,
    *,
    trials: int,
    pack: int = 4,
    out: str = ".",
    method: str = "map",
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Run trials of ``study`` until it holds ``trials`` (all workers together), ``pack`` per program.

    Each round asks up to ``pack`` trials (``study.ask(space)``), one at a time, while the study holds
    fewer than ``trials`` trials that are complete, pruned, failed, running or waiting; puts each
    trial's parameters into ``base``; groups the configurations by ``rnnjax.sweep.group_key`` and trains
    every group with ``rnnjax.sweep.run_sweep`` (one compiled program), evaluating every
    ``base.eval_every`` steps (0: ten evaluations when ``steps`` allows, see below), reporting each loss to
    its trial and stopping the rows the pruner prunes. Then tells each trial its result.

    Args:
      study: an Optuna study (``create_study``), direction minimise.
      base: the ``RunConfig`` every trial starts from; its ``steps`` is every trial's budget.
      space: ``parse_space``'s distributions (checked with ``check_space`` here).
      trials: total number of trials in the study (across every worker).
      pack: trials asked at once, trained as one program where their shapes agree.
      out: directory named in the reproducing commands (``out/trials/trialN``).
      method: ``run_sweep``'s method: ``"map"`` (every row bitwise its ``rnnjax train`` run) or ``"vmap"``.
      log: optional ``print``-like callback.

    Returns:
      A ``SearchResult`` with this worker's trials.

    Raises:
      ValueError: an invalid ``trials``/``pack``/``method``, ``space`` or report period (``eval_every``
        must be 0, at least ``rnnjax.sweep.MIN_CHUNK`` or ``steps``).
    """
    import optuna

    from rnnjax import sweep as sw

    for arg, value in (("trials", trials), ("pack", pack)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg}: expected a positive integer, got {value!r}")
    if method not in sw.METHODS:
        raise ValueError(f"method: expected one of {sw.METHODS}, got {method!r}")
    base = base.validate()
    check_space(base, space)
    period = report_period(base)
    say = log or (lambda _msg: None)
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL,
               optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    if isinstance(study.sampler, optuna.samplers.GridSampler):
        trials = min(trials, grid_size(space))  # a grid sampler repeats points once every one was asked
    worker = f"{socket.gethostname()}:{os.getpid()}"
    t0 = time.perf_counter()
    done, packs, told = [], [], set()
    while True:
        asked = []
        while len(asked) < pack and len(study.get_trials(deepcopy=False, states=counted)) < trials:
            asked.append(study.ask(space))
        if not asked:
            break
        try:
            configs, groups = [], {}
            for i, t in enumerate(asked):
                try:  # a combination the ranges allow but a run does not (e.g. momentum with adam) fails alone
                    configs.append(dataclasses.replace(base, **t.params).validate())
                    groups.setdefault(sw.group_key(configs[-1]), []).append(i)
                except ValueError as err:
                    configs.append(None)
                    reason = f"invalid configuration: {str(err).splitlines()[0]}"
                    t.set_user_attr("fail_reason", reason)
                    _tell(study, t, state=optuna.trial.TrialState.FAIL)
                    told.add(t.number)
                    done.append({"number": t.number, "params": dict(t.params), "state": "FAIL", "value": None,
                                 "steps": 0, "command": None, "fail_reason": reason})
                    say(f"search: trial {t.number} FAIL ({reason})")
            for idx in groups.values():
                members = [asked[i] for i in idx]
                say(f"search: trials {[t.number for t in members]} as one program ({len(members)} runs, "
                    f"{base.steps} steps)")
                rows, timing = _train_pack(study, members, [configs[i] for i in idx], period, method, out, worker,
                                           told)
                packs.append({"trials": [t.number for t in members], "worker": worker,
                              "timing": {k: round(v, 3) for k, v in timing.items()}})
                done.extend(rows)
                for r in rows:
                    value = "-" if r["value"] is None else f"{r['value']:.4g}"
                    say(f"search: trial {r['number']} {r['state']} value {value} after {r['steps']} steps"
                        + (f" ({r['fail_reason']})" if r["fail_reason"] else ""))
        except BaseException as err:  # never leave a trial RUNNING: fail what was not told, then stop
            reason = f"worker error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            for t in asked:
                if t.number not in told:
                    t.set_user_attr("fail_reason", reason)
                    _tell(study, t, state=optuna.trial.TrialState.FAIL)
            raise
    return SearchResult(done, packs, time.perf_counter() - t0)


def report_period(base: Any) -> int:
    """Steps between reports to the pruner: ``base.eval_every``, or (0) the steps of ``run_sweep``'s
    progress chunks (ten evaluations when ``steps`` has such a divisor of at least ``MIN_CHUNK``, else one).

    Raises:
      ValueError: ``eval_every`` below ``rnnjax.sweep.MIN_CHUNK`` (shorter compiled loops change a run's
        bits) and not ``steps``.
    """
    from rnnjax import sweep as sw

    if not base.eval_every:
        return sw._progress_chunk(base.steps)
    if base.eval_every < sw.MIN_CHUNK and base.eval_every != base.steps:
        raise ValueError(f"eval_every: expected 0, {base.steps} (steps) or at least {sw.MIN_CHUNK} steps "
                         f"(shorter compiled loops change a run's bits), got {base.eval_every}")
    return min(base.eval_every, base.steps)


def _train_pack(study, trials, configs, period, method, out, worker, told):
    """Train one group of trials as one ``run_sweep``; report, prune and tell each; rows of the results."""
    import optuna

    from rnnjax import sweep as sw

    n = len(trials)
    steps = configs[0].steps
    pruned_at = [None] * n
    not_finite_at = [None] * n

    def on_evaluate(step, evals):
        stop = np.zeros(n, bool)
        for i, t in enumerate(trials):
            if pruned_at[i] is not None or not_finite_at[i] is not None:
                stop[i] = True
                continue
            loss = float(evals["loss"][i])
            if not math.isfinite(loss):
                not_finite_at[i] = step
                stop[i] = True
                continue
            t.report(loss, step)
            if step < steps and t.should_prune():
                pruned_at[i] = step
                stop[i] = True
        return stop

    t0 = time.perf_counter()
    result = sw.run_sweep(configs, method=method, chunk=period, on_evaluate=on_evaluate)
    wall = time.perf_counter() - t0
    rows = []
    for i, (t, c, row) in enumerate(zip(trials, configs, result.rows)):
        trained = row["steps"]
        command = "rnnjax " + shlex.join(dataclasses.replace(c, steps=max(trained, 1)).train_argv(
            os.path.join(out, "trials", f"trial{t.number}")))
        attrs = {"steps": trained, "command": command, "worker": worker, "pack": [x.number for x in trials],
                 "eval_accuracy": row["eval_accuracy"], "skipped_steps": row["skipped_steps"],
                 "pack_wall_s": round(wall, 3)}
        reason = None
        if row["status"] == "stopped_non_finite":
            reason = (f"diverged: {c.max_skips} consecutive non-finite steps, stopped at step {trained} of {steps} "
                      f"({row['skipped_steps']} skipped in all)")
        elif not_finite_at[i] is not None or row["eval_loss"] is None:
            reason = f"evaluation loss not finite at step {not_finite_at[i] or trained}"
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        if reason is not None:
            t.set_user_attr("fail_reason", reason)
            frozen = _tell(study, t, state=optuna.trial.TrialState.FAIL)
        elif pruned_at[i] is not None:
            frozen = _tell(study, t, state=optuna.trial.TrialState.PRUNED)  # its value: the last reported loss
        else:
            frozen = _tell(study, t, row["eval_loss"])
        told.add(t.number)
        state, value = frozen.state.name, frozen.value
        rows.append({"number": t.number, "params": dict(t.params), "state": state, "value": value,
                     "steps": trained, "command": command, "fail_reason": reason})
    return rows, result.timing


def _tell(study, trial, value=None, state=None):
    """``study.tell``; the frozen trial. ``GridSampler.after_trial`` calls ``study.stop()`` once its grid is
    exhausted, which raises outside ``study.optimize``; the trial's state is stored by then (``tell`` stores
    it in a ``finally``), and ``run_search`` stops by its own count."""
    try:
        return study.tell(trial, value, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise
        return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)


# ---------------------------------------------------------------------------------------------- results
def trial_rows(study: Any) -> list[dict]:
    """Every trial of ``study`` (all workers) as a dict: ``number``, ``state``, ``value``, ``params``,
    ``steps``, ``command``, ``fail_reason``, ``worker``, ``pack``, ``intermediate`` (step -> loss)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append({
            "number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
            "steps": a.get("steps"), "command": a.get("command"), "fail_reason": a.get("fail_reason"),
            "worker": a.get("worker"), "pack": a.get("pack"), "eval_accuracy": a.get("eval_accuracy"),
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        })
    return rows


def best_row(rows: list[dict]) -> dict | None:
    """The completed trial with the lowest value (ties: the lowest number), or None."""
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    return min(complete, key=lambda r: (r["value"], r["number"])) if complete else None


def markdown_table(rows: list[dict]) -> str:
    """Every trial as a markdown table: number, each parameter, value, state, steps, the ``rnnjax train``
    command that reproduces it (for a pruned trial: up to the step it was pruned at)."""
    names = list(dict.fromkeys(k for r in rows for k in r["params"]))
    head = ["trial", *names, "value", "state", "steps", "command"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        params = [_text(r["params"][k]) if k in r["params"] else "" for k in names]
        value = "" if r["value"] is None else f"{r['value']:.6g}"
        state = r["state"] + (f" ({r['fail_reason']})" if r.get("fail_reason") else "")
        cmd = f"`{r['command']}`" if r.get("command") else ""
        lines.append("| " + " | ".join([str(r["number"]), *params, value, state, str(r["steps"] or ""), cmd]) + " |")
    return "\n".join(lines) + "\n"


def write_results(study: Any, out: str, *, storage: str | None = None, figures: bool = True,
                  extra: dict | None = None) -> dict:
    """Write ``out/search.json``, ``out/search.md`` and (``figures``) Optuna's matplotlib figures
    ``out/optimization_history.png``, ``param_importances.png``, ``parallel_coordinate.png``, each
    atomically (every worker may write them; the last to finish sees every trial).

    Returns:
      The ``search.json`` content: ``study``, ``storage``, ``space``, ``config``, ``counts`` (per state),
      ``best`` (row or None), ``trials`` (``trial_rows``), ``figures`` (name -> file or why none).
    """
    from rnnjax.rundir import write_json

    rows = trial_rows(study)
    best = best_row(rows)
    counts: dict = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    report = {
        "study": study.study_name,
        "storage": os.path.join(out, JOURNAL) if storage is None else redact(storage),
        "space": study.user_attrs.get("rnnjax_space"),
        "config": study.user_attrs.get("rnnjax_config"),
        "direction": "minimize",
        "counts": counts,
        "best": best,
        "trials": rows,
        **(extra or {}),
    }
    os.makedirs(out, exist_ok=True)
    report["figures"] = _write_figures(study, out) if figures else {}
    write_json(os.path.join(out, "search.json"), report)
    text = f"# Search `{study.study_name}`\n\nspace: `{report['space']}`\n\n" + markdown_table(rows)
    text += "\nbest: " + (f"trial {best['number']}, value {best['value']:.6g}: `{best['command']}`\n" if best
                          else "no completed trial\n")
    _atomic_write(os.path.join(out, "search.md"), text.encode())
    return report


def _write_figures(study, out):
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    done = {}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    for name in FIGURES:
        if not complete or (name == "param_importances" and len(complete) < 2):
            done[name] = "skipped: needs at least " + ("two completed trials" if complete else "one completed trial")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning of optuna.visualization.matplotlib
                ax = getattr(ovm, f"plot_{name}")(study)
            fig = (ax.flat[0] if isinstance(ax, np.ndarray) else ax).figure
            path = os.path.join(out, f"{name}.png")
            tmp = f"{path}.tmp-{os.getpid()}.png"
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
            plt.close(fig)
            os.replace(tmp, path)
            done[name] = f"{name}.png"
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. importances of a constant parameter
            done[name] = f"skipped: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return done


# ---------------------------------------------------------------------------------------------- helpers
def _atomic_write(path, data: bytes):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _postgres_driver() -> str | None:
    """``"psycopg"`` (3, SQLAlchemy 2.1's default for ``postgresql://``), ``"psycopg2"`` or None."""
    try:
        import psycopg  # noqa: F401
        return "psycopg"
    except ImportError:
        pass
    try:
        import psycopg2  # noqa: F401
        return "psycopg2"
    except ImportError:
        return None


def _number(name, text, kind):
    try:
        if kind is int:
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        value = float(text)
    except ValueError:
        raise ValueError(f"space: {name}: expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"space: {name}: expected a finite number, got {text!r}")
    return value


def _convert(name, field_type, text):
    if field_type is bool:
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"space: {name}: expected true or false, got {text!r}")
    if field_type in (int, float):
        return _number(name, text, field_type)
    return text


def _text(v):
    return repr(v) if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)


def _grid_values(space):
    import optuna

    values = {}
    for name, d in space.items():
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            values[name] = list(d.choices)
        elif isinstance(d, optuna.distributions.IntDistribution) and not d.log:
            values[name] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, optuna.distributions.IntDistribution):
            values[name] = list(range(d.low, d.high + 1))
        else:
            return None
    return values


__all__ = ["FIGURES", "JOURNAL", "KINDS", "PRUNERS", "SAMPLERS", "SearchResult", "best_row", "check_space",
           "create_study", "format_space", "grid_size", "make_pruner", "make_sampler", "markdown_table",
           "open_storage", "parse_space", "redact", "report_period", "run_search", "searchable_fields",
           "trial_rows", "write_results"]
