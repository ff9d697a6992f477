"""Sweeps: many training runs — seeds × recurrent init gains × learning rates — in ONE compiled program.

A training run is a pure function (``rnnjax.train.Trainer``: ``init(key,
learning_rate)`` then ``run(state, num_steps)``, a ``lax.scan`` over steps), so
``jax.vmap`` over a leading *run* axis trains every run of a grid at once:
one compilation instead of one per run (on a small CPU the bulk of the
saving, see ``benchmarks/results/sweep_vs_sequential.md``), and each step's
small kernels become fewer, batched kernels (the gain on accelerators). The
run axis can be split over devices (``jax.sharding``, one run per device or more).

Each run of the sweep is exactly the run ``rnnjax train`` makes with the same
flags, ``--init-gain g``, ``--seed s`` and ``--lr lr``:

- parameters: ``build(config_g).init(run_key(s), lr)`` — the single-run
  initialiser of the gain-``g`` model, the function ``rnnjax train`` jits —
  for every run, all of them in ONE compiled program (one compilation per
  sweep, not one per gain);
- data: step ``t`` draws ``task.sample(fold_in(data_key, t), B)`` with
  ``data_key`` from ``run_key(s)``, inside the shared ``Trainer.run``;
- learning rate: the value injected in the optimizer state
  (``optax.inject_hyperparams``);
- evaluation: ONE evaluation set for every run (the task built with the
  shared ``eval_seed``), so seed statistics measure training variance only.

Two methods:

- ``method="map"`` (default, ``rnnjax sweep``): the runs execute one after
  another inside one compiled program (``jax.lax.map``; per device with a
  mesh). Each run's computation is the single run's, compiled with XLA's
  defaults like ``rnnjax train``, so every row equals the separate run bit
  for bit on every backend, by construction — one compilation for the grid,
  and no cost to the single run.
- ``method="vmap"`` (opt-in, ``rnnjax sweep --vectorize``): the loss and
  gradients of all runs are one vectorised computation (fewer, larger
  kernels: the gain on accelerators). ``jax.vmap`` alone does not keep a
  run's bits: XLA compiles the batched program differently (per-run scalars
  such as the clipping norm become vectors whose divisions XLA rewrites and
  fuses differently; XLA:CPU picks reduction kernels by shape; its fusion
  emitters order a reduction over (time, batch) differently with a run axis
  between them). The vectorised sweep therefore builds its trainers with
  ``batch_invariant=True`` (the optimizer update runs per run,
  ``jax.custom_batching.sequential_vmap``) and compiles with
  ``rnnjax.train.compiler_options()``: its rows equal, bit for bit on CPU,
  single runs built and compiled the same way — not the default
  ``rnnjax train`` run, from which they differ by float rounding that long,
  chaotic training amplifies. That opt-in cost is the sweep's alone.

Example::

    configs = rnnjax.sweep.grid(RunConfig(task="adding", cell="lstm", steps=200),
                                init_gains=(0.5, 1.0, 1.5), seeds=(0, 1, 2), lrs=(1e-3,))
    result = rnnjax.sweep.run_sweep(configs)
    result.rows[0]  # {"init_gain": 0.5, "seed": 0, "lr": 0.001, "eval_loss": ..., ...}

References:
  Lu et al., "Discovered policy optimisation" / purejaxrl (2022): a whole
  training run as one jittable function, vmapped over seeds.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

RUN_AXIS = "run"
METHODS = ("map", "vmap")
MIN_CHUNK = 10  # shortest chunk of steps per compiled call used for progress reports (see _progress_chunk)
SWEPT_FIELDS = ("init_gain", "seed", "lr")


class SweepResult(NamedTuple):
    """What ``run_sweep`` returns.

    Attributes:
      rows: one dict per run, in the order of ``configs``: ``init_gain``,
        ``seed``, ``lr``, ``eval_loss``, ``eval_accuracy`` (or None),
        ``baseline_loss``, ``final_train_loss``, ``skipped_steps``, ``steps``,
        ``status`` (``"completed"``, ``"stopped_non_finite"``, or ``"stopped"`` by ``on_evaluate``).
      states: the final ``TrainState`` of every run stacked on a leading axis R.
      metrics: per-step training metrics, each ``(R, steps)``.
      timing: ``{"init_s", "compile_s", "train_s", "eval_s", "total_s"}`` wall seconds.
      initial_params: every run's parameters before training, stacked like ``states.params``.
    """

    rows: list
    states: Any
    metrics: dict
    timing: dict
    initial_params: Any = None


def grid(base: Any, *, init_gains: Sequence[float] | None = None, seeds: Sequence[int] | None = None,
         lrs: Sequence[float] | None = None) -> list:
    """The configurations of a grid: every (init_gain, lr, seed), seeds varying fastest.

    Args:
      base: an ``rnnjax.train.RunConfig`` holding every other setting.
      init_gains, seeds, lrs: the values to sweep; None keeps ``base``'s value.

    Returns:
      A list of ``RunConfig`` (``dataclasses.replace(base, init_gain=g, lr=lr, seed=s)``).

    Raises:
      ValueError: an empty list, a duplicate value, a non-positive gain or lr,
        a non-integer seed (the message names the argument).
    """
    gains = _values("init_gains", [base.init_gain] if init_gains is None else init_gains, float, positive=True)
    rates = _values("lrs", [base.lr] if lrs is None else lrs, float, positive=True)
    seeds = _values("seeds", [base.seed] if seeds is None else seeds, int)
    return [dataclasses.replace(base, init_gain=g, lr=lr, seed=s)
            for g, lr, s in itertools.product(gains, rates, seeds)]


def run_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis ``Mesh`` (axis ``"run"``) over which the runs of a sweep are split.

    ``devices`` as in ``rnnjax.distributed.batch_mesh`` (same errors).
    """
    from rnnjax.distributed import batch_mesh

    return batch_mesh(devices, axis_name=RUN_AXIS)


def run_sweep(
    configs: Sequence[Any],
    *,
    mesh: Mesh | None = None,
    method: str = "map",
    log: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int | None = None,
    on_evaluate: Callable[[int, dict], Any] | None = None,
) -> SweepResult:
    """Train every configuration in one jitted program and evaluate each on its evaluation set.

    The runs may differ in any setting that keeps the shapes of the training
    state and of the batches (``group_key``): the seed, the learning rate and
    the init gain, and also e.g. the clipping threshold, the optimizer, a
    scalar task option. Runs that differ only in seed, learning rate and init
    gain share one training function (the gain only enters the
    initialisation, the learning rate is a value in the optimizer state);
    each other combination of settings (a *variant*) has its own, and all of
    them are one compiled program.

    Args:
      configs: ``RunConfig``s of one group (equal ``group_key``; e.g. from
        ``grid``), with equal ``steps``.
      mesh: optional one-axis mesh (``run_mesh``, or any one-axis mesh such as
        ``rnnjax.distributed.batch_mesh``); the run axis is split over its
        devices (each variant's runs are padded with copies of its last one to
        a multiple of the device count; the copies are dropped).
      method: ``"map"`` (default): runs one after another inside the compiled
        program, each row bitwise the separate ``rnnjax train`` run on any
        backend. ``"vmap"``: vectorised over the runs of a variant (see the
        module docstring for what its rows equal).
      log: optional ``print``-like callback for progress lines.
      progress: optional callback ``progress(steps_done)``, called after every
        chunk of training steps (a progress bar).
      chunk: train in chunks of this many steps (one compiled program for the
        chunk, called repeatedly: the same bits as one long scan, as a resumed
        ``rnnjax train`` run, for chunks of ``MIN_CHUNK`` steps or more — XLA
        compiles a one-step loop as straight-line code, fused differently);
        default: all steps at once, or at least 10 chunks of at least
        ``MIN_CHUNK`` steps when ``progress`` is given (else one call).
      on_evaluate: optional ``on_evaluate(step, evals) -> stop``, called after
        every chunk: ``evals`` holds each run's evaluation (``"loss"``, and
        ``"accuracy"`` for classification) as arrays ``(R,)`` in the order of
        ``configs``; ``stop`` (a boolean array ``(R,)`` or None) marks runs
        that train no further (early stopping, e.g. an Optuna pruner). A
        stopped run stops updating inside the compiled program (``lax.cond``
        on a per-run mask: its state, step counter included, is held) and its
        row gets status ``"stopped"``. The running rows keep the bits of
        the sweep without it.

    Returns:
      A ``SweepResult``; ``rows[i]["config"]`` is ``configs[i].to_json()``.

    Raises:
      ValueError: ``configs`` empty, with different ``steps``, or of
        different groups (the differing fields named), or an unknown ``method``.
    """
    from rnnjax.train import build, compiler_options

    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    configs = [c.validate() for c in configs]
    if not configs:
        raise ValueError("configs: expected at least one RunConfig, got none")
    base = configs[0]
    steps = base.steps
    if any(c.steps != steps for c in configs):
        raise ValueError("configs: runs of one sweep train the same number of steps; got "
                         f"{sorted({c.steps for c in configs})}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk: expected a positive integer (steps per compiled call) or None, got {chunk!r}")
    say = log or (lambda _msg: None)
    t_start = time.perf_counter()
    vectorised = method == "vmap"

    # ---- variants: one training function per combination of the settings other than seed, lr and gain
    variants = list(dict.fromkeys(variant_key(c) for c in configs))
    members = [[i for i, c in enumerate(configs) if variant_key(c) == v] for v in variants]
    trainers = [build(v, batch_invariant=vectorised) for v in variants]
    shapes = [group_signature(t) for t in trainers]
    for v, s in zip(variants[1:], shapes[1:]):
        if s != shapes[0]:
            diff = variants[0].differences(v)
            raise ValueError(f"configs: runs of one sweep must share the shapes of their training state and "
                             f"batches (group_key); these differ in {diff}")

    # ---- initial states: one compiled program, each run's state the single-run init's (``_initial_states``)
    states = _initial_states(configs, members, trainers, batch_invariant=vectorised)
    start_params = [s.params for s in states]
    eval_batches = [t.task.eval_batch() for t in trainers]  # one evaluation set per variant (its eval_seed)
    t_init = time.perf_counter()

    # ---- pad each variant to the device count and place the run axis
    n = len(configs)
    pads = [0] * len(variants)
    if mesh is not None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"mesh: expected a one-axis mesh (run_mesh), got axes {mesh.axis_names}")
        sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
        pads = [(-len(idx)) % mesh.size for idx in members]
        states = [jax.tree.map(lambda x, p=p: _pad_runs(x, p), s) if p else s for s, p in zip(states, pads)]
        states = jax.device_put(states, sharding)
    states = tuple(states)
    where = {i: (v, j) for v, idx in enumerate(members) for j, i in enumerate(idx)}  # run i = row j of variant v

    def mapped(fn):
        if vectorised:
            return jax.vmap(fn)
        if mesh is None:
            return functools.partial(jax.lax.map, fn)
        spec = PartitionSpec(mesh.axis_names[0])  # every device maps over its own share of the runs
        return jax.shard_map(functools.partial(jax.lax.map, fn), mesh=mesh, in_specs=spec, out_specs=spec,
                             check_vma=False)

    def program(num_steps):
        if on_evaluate is not None:
            return masked_program(num_steps)
        runs = [mapped(lambda s, t=t: t.run(s, num_steps)) for t in trainers]
        return lambda all_states: tuple(zip(*(run(s) for run, s in zip(runs, all_states))))

    def masked_program(num_steps):  # a run whose mask is False is held: its state and step stay unchanged
        def run_or_hold(state_active, t):
            s, a = state_active

            def hold(s):
                shapes = jax.eval_shape(lambda s: t.run(s, num_steps), s)[1]
                held = {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}
                return s, dict(held, halted=jnp.ones(shapes["halted"].shape, bool))

            return jax.lax.cond(a, lambda s: t.run(s, num_steps), hold, s)

        runs = [mapped(functools.partial(run_or_hold, t=t)) for t in trainers]

        def sweep_chunk(all_states, all_active):
            return tuple(zip(*(run((s, a)) for run, s, a in zip(runs, all_states, all_active))))

        return sweep_chunk

    chunk = min(chunk or (_progress_chunk(steps) if progress is not None else steps), steps)
    options = compiler_options() if vectorised else {}
    jit_kwargs = {}
    if mesh is not None:
        jit_kwargs = {"in_shardings": (sharding,), "out_shardings": (sharding, sharding)}
    say(f"sweep: compiling {n} runs ({len(variants)} variant{'s' * (len(variants) > 1)}) x {steps} steps "
        f"({method})" + (f" on {mesh.size} devices" if mesh is not None else ""))
    active = None
    if on_evaluate is not None:  # one run mask per variant (padding copies follow their last run)
        active = tuple(jnp.ones(len(idx) + p, bool) for idx, p in zip(members, pads))
        if mesh is not None:
            active = jax.device_put(active, sharding)
            jit_kwargs["in_shardings"] = (sharding, sharding)
    args = (states,) if active is None else (states, active)
    compiled = {chunk: jax.jit(program(chunk), **jit_kwargs).lower(*args).compile(compiler_options=options)}
    rest = steps % chunk
    if rest:
        compiled[rest] = jax.jit(program(rest), **jit_kwargs).lower(*args).compile(compiler_options=options)
    # one run at a time: the evaluation is cheap, and so it is bitwise `rnnjax train`'s
    evaluate_all = jax.jit(lambda ps: tuple(jax.lax.map(lambda q, t=t, b=b: t.evaluate(q, b), p)
                                            for t, b, p in zip(trainers, eval_batches, ps)),
                           compiler_options=options)
    t_compile = time.perf_counter()
    say("sweep: training")
    done, pieces, evals, stopped = 0, [], None, np.zeros(n, bool)
    while done < steps:
        size = min(chunk, steps - done)
        states, metrics = compiled[size](states) if active is None else compiled[size](states, active)
        pieces.append(metrics)
        done += size
        jax.block_until_ready(states)
        if progress is not None:
            progress(done)
        if on_evaluate is not None:
            evals = evaluate_all(tuple(s.params for s in states))
            ev = jax.device_get(evals)
            per_run = {k: np.array([ev[v][k][j] for v, j in (where[i] for i in range(n))])
                       for k in ev[0]}
            stop = on_evaluate(done, per_run)
            if stop is not None and done < steps:
                stopped |= np.asarray(stop, bool).reshape(n)
                active = tuple(jnp.asarray(np.concatenate([~stopped[idx], np.repeat(~stopped[idx[-1:]], p)]))
                               for idx, p in zip(members, pads))
                if mesh is not None:
                    active = jax.device_put(active, sharding)
    t_train = time.perf_counter()
    if evals is None:
        evals = evaluate_all(tuple(s.params for s in states))
    evals, pieces, counters = jax.device_get(
        (evals, pieces, [(s.step, s.skipped, s.consecutive_skips) for s in states]))
    t_eval = time.perf_counter()

    # ---- back to the order of ``configs`` (dropping the padding copies)
    order = [i for idx in members for i in idx]
    metrics = {k: np.concatenate([np.concatenate([p[v][k] for p in pieces], axis=1)[: len(members[v])]
                                  for v in range(len(variants))])
               for k in pieces[0][0]}
    inverse = np.argsort(order)
    metrics = {k: m[inverse] for k, m in metrics.items()}
    final = _stack([jax.tree.map(lambda x, j=where[i][1]: x[j], states[where[i][0]]) for i in range(n)])
    initial = _stack([jax.tree.map(lambda x, j=where[i][1]: x[j], start_params[where[i][0]]) for i in range(n)])

    rows = []
    for i, c in enumerate(configs):
        v, j = where[i]
        ran = ~np.asarray(metrics["halted"][i])
        last = np.flatnonzero(ran)
        ev = evals[v]
        rows.append({
            "init_gain": c.init_gain,
            "seed": c.seed,
            "lr": c.lr,
            "eval_seed": c.eval_seed,
            "eval_loss": _finite_or_none(ev["loss"][j]),
            "eval_accuracy": _finite_or_none(ev["accuracy"][j]) if "accuracy" in ev else None,
            "baseline_loss": trainers[v].task.baseline_loss,
            "final_train_loss": _finite_or_none(metrics["loss"][i][last[-1]]) if last.size else None,
            "skipped_steps": int(counters[v][1][j]),
            "steps": int(counters[v][0][j]),
            "status": ("stopped_non_finite" if c.max_skips and int(counters[v][2][j]) >= c.max_skips
                       else "stopped" if stopped[i] else "completed"),
            "config": c.to_json(),
        })
    timing = {"init_s": t_init - t_start, "compile_s": t_compile - t_init, "train_s": t_train - t_compile,
              "eval_s": t_eval - t_train, "total_s": t_eval - t_start}
    return SweepResult(rows, final, metrics, timing, initial)


def variant_key(config: Any) -> Any:
    """``config`` with seed, learning rate and init gain set to fixed values: runs with equal keys train with
    one function (the gain only enters the initialisation; the learning rate is a value in the optimizer state)."""
    return dataclasses.replace(config, seed=0, lr=1e-3, init_gain=1.0)


def _init_key(config: Any) -> Any:
    """``config``'s variant with its init gain: runs with equal keys share one initialiser (their seeds and
    learning rates are its arguments)."""
    return dataclasses.replace(variant_key(config), init_gain=config.init_gain)


def group_signature(trainer: Any) -> Any:
    """Shapes and dtypes of a trainer's state and of its training batch: what runs of one sweep share."""
    from rnnjax.train import run_key

    state = jax.eval_shape(trainer.init, run_key(0), 1e-3)
    batch = jax.eval_shape(lambda k: trainer.task.sample(k, trainer.batch_size), run_key(0))
    return jax.tree.structure((state, batch)), tuple((x.shape, x.dtype) for x in jax.tree.leaves((state, batch)))


def group_key(config: Any) -> Any:
    """A hashable key equal for configs that can share one sweep (``run_sweep``): the same model and data
    shapes. Settings that only change values (seed, learning rate, init gain, clipping threshold, optimizer
    hyper-parameters, scalar task options) keep the key; the cell, hidden size, sequence length, batch
    size, optimizer kind, layers or steps change it."""
    from rnnjax.train import build

    return (config.steps,) + group_signature(build(variant_key(config)))


# ------------------------------------------------------------------------------------------- helpers
def _values(name, values, kind, positive=False):
    values = list(values)
    if not values:
        raise ValueError(f"{name}: expected at least one value, got none")
    out = []
    for x in values:
        if kind is int:
            if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
                raise ValueError(f"{name}: expected integers, got {x!r}")
            x = int(x)
        else:
            x = float(x)
            if not math.isfinite(x) or (positive and x <= 0):
                raise ValueError(f"{name}: expected positive numbers, got {x!r}")
        out.append(x)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: duplicate values in {out}")
    return out


def _initial_states(configs, members, trainers, *, batch_invariant=False):
    """Every run's initial ``TrainState`` from ONE compiled program (``sweep_init``), stacked per variant.

    For each distinct (variant, init gain) the program calls the single-run initialiser of that gain's trainer,
    ``build(config_g).init`` (what ``rnnjax train`` jits), with each run's ``run_key(seed)`` and learning rate,
    one run after another (``lax.map``: each run's init is the unbatched single-run computation, as in the
    training program; ``jax.vmap`` would batch the initialisers' kernels, QR and matmuls included, which XLA
    may compute differently). The gain enters each cell's initialiser as a Python float in ways of its own
    (``rnnjax.CELLS``: orthogonal gains, log-gain biases, capped radii), so every gain keeps its own
    initialiser in the program; what the sweep saves is compilations, most of the cost of initialising: one
    for the sweep instead of one per gain. Every state is bitwise the single run's
    (``tests/test_sweep.py`` checks every registered cell).

    Args:
      configs: the validated ``RunConfig``s of the sweep.
      members: each variant's runs (indices into ``configs``).
      trainers: each variant's ``Trainer`` (``build(variant_key(config))``).
      batch_invariant: how ``trainers`` were built (other gains' trainers are built the same way).

    Returns:
      One ``TrainState`` per variant, its leaves stacked ``(len(members[v]), ...)`` in the order of ``members[v]``.
    """
    from rnnjax.train import build, run_key

    own = {variant_key(configs[idx[0]]): t for idx, t in zip(members, trainers)}
    groups = list(dict.fromkeys(_init_key(c) for c in configs))
    runs = [[i for i, c in enumerate(configs) if _init_key(c) == g] for g in groups]
    inits = [(own[g] if g in own else build(g, batch_invariant=batch_invariant)).init for g in groups]
    where = {i: (g, r) for g, idx in enumerate(runs) for r, i in enumerate(idx)}  # run i = row r of group g
    parts = [list(dict.fromkeys(where[i][0] for i in idx)) for idx in members]  # each variant's groups
    starts = [dict(zip(used, np.cumsum([0] + [len(runs[g]) for g in used]))) for used in parts]
    picks = [np.asarray([start[where[i][0]] + where[i][1] for i in idx]) for idx, start in zip(members, starts)]

    def sweep_init(keys, lrs):
        stacks = [jax.lax.map(lambda key_lr, init=init: init(*key_lr), (k, lr))
                  for init, k, lr in zip(inits, keys, lrs)]
        out = []
        for used, pick in zip(parts, picks):
            whole = jax.tree.map(lambda *xs: jnp.concatenate(xs), *(stacks[g] for g in used))
            out.append(whole if np.array_equal(pick, np.arange(len(pick))) else jax.tree.map(lambda x: x[pick], whole))
        return out

    keys = [jnp.stack([run_key(configs[i].seed) for i in idx]) for idx in runs]
    lrs = [np.asarray([configs[i].lr for i in idx]) for idx in runs]
    return jax.block_until_ready(jax.jit(sweep_init)(keys, lrs))


def _progress_chunk(steps: int) -> int:
    """Steps per call for progress reports: the largest divisor of ``steps`` giving at least 10 calls (one
    compiled program) if it is at least ``MIN_CHUNK``, else all steps in one call. XLA simplifies a
    very short loop (a scan of one step becomes straight-line code, fused differently), which would
    change the bits of a run; ``MIN_CHUNK`` keeps the chunked run equal to the unchunked one."""
    best = max(d for d in range(1, max(1, steps // 10) + 1) if steps % d == 0)
    return best if best >= MIN_CHUNK else steps


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _pad_runs(x, pad):
    return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


__all__ = ["METHODS", "RUN_AXIS", "SweepResult", "grid", "group_key", "group_signature", "run_mesh", "run_sweep",
           "variant_key"]
