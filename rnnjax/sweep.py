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

- parameters: ``jax.jit(build(config_g).init)(run_key(s), lr)`` — the
  single-run initialiser of the gain-``g`` model, called for every run;
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
SWEPT_FIELDS = ("init_gain", "seed", "lr")


class SweepResult(NamedTuple):
    """What ``run_sweep`` returns.

    Attributes:
      rows: one dict per run, in the order of ``configs``: ``init_gain``,
        ``seed``, ``lr``, ``eval_loss``, ``eval_accuracy`` (or None),
        ``baseline_loss``, ``final_train_loss``, ``skipped_steps``, ``steps``,
        ``status`` (``"completed"`` or ``"stopped_non_finite"``).
      states: the final ``TrainState`` of every run stacked on a leading axis R.
      metrics: per-step training metrics, each ``(R, steps)``.
      timing: ``{"init_s", "compile_s", "train_s", "eval_s", "total_s"}`` wall seconds.
    """

    rows: list
    states: Any
    metrics: dict
    timing: dict


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
) -> SweepResult:
    """Train every configuration in one jitted program and evaluate each on the shared evaluation set.

    Args:
      configs: ``RunConfig``s that differ only in ``init_gain``, ``seed`` and
        ``lr`` (e.g. from ``grid``). Their ``steps`` are run in one ``lax.scan``.
      mesh: optional one-axis mesh (``run_mesh``, or any one-axis mesh such as
        ``rnnjax.distributed.batch_mesh``); the run axis is split over its
        devices (runs are padded with copies of the last one to a multiple of
        the device count; the copies are dropped).
      method: ``"map"`` (default): runs one after another inside the compiled
        program, each row bitwise the separate ``rnnjax train`` run on any
        backend. ``"vmap"``: vectorised over runs (see the module docstring
        for what its rows equal).
      log: optional ``print``-like callback for progress lines.

    Returns:
      A ``SweepResult``.

    Raises:
      ValueError: ``configs`` empty or differing in another field (named), or
        an unknown ``method``.
    """
    from rnnjax.train import build, compiler_options, run_key

    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    configs = list(configs)
    if not configs:
        raise ValueError("configs: expected at least one RunConfig, got none")
    base = configs[0]
    for c in configs[1:]:
        diff = [f.name for f in dataclasses.fields(base)
                if f.name not in SWEPT_FIELDS and getattr(c, f.name) != getattr(base, f.name)]
        if diff:
            raise ValueError(f"configs: runs of one sweep may differ only in {SWEPT_FIELDS}; they differ in {diff}")
    say = log or (lambda _msg: None)
    t_start = time.perf_counter()
    vectorised = method == "vmap"

    # ---- one trainer per distinct gain: its init is the single-run init of that gain
    gains = list(dict.fromkeys(c.init_gain for c in configs))
    trainers = {g: build(dataclasses.replace(base, init_gain=g), batch_invariant=vectorised) for g in gains}
    trainer = trainers[gains[0]]  # step/run/evaluate do not depend on the gain (it only enters init)

    # ---- initial states: the jitted single-run init of each run's gain (one compilation per gain, as
    # `rnnjax train` jits it), called with the run's key and learning rate
    inits = {g: jax.jit(trainers[g].init) for g in gains}
    states = _stack([inits[c.init_gain](run_key(c.seed), c.lr) for c in configs])
    eval_batch = trainer.task.eval_batch()  # one evaluation set for every run (the shared eval_seed)
    t_init = time.perf_counter()

    # ---- pad to the device count and place the run axis
    n = len(configs)
    pad = 0
    if mesh is not None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"mesh: expected a one-axis mesh (run_mesh), got axes {mesh.axis_names}")
        pad = (-n) % mesh.size
        if pad:
            states = jax.tree.map(lambda x: _pad_runs(x, pad), states)
        sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
        states = jax.device_put(states, sharding)
        in_shardings, out_shardings = (sharding,), (sharding, sharding)
    else:
        in_shardings = out_shardings = None
    steps = base.steps

    def one(state):
        return trainer.run(state, steps)

    if vectorised:
        train_all = jax.vmap(one)
    elif mesh is None:
        train_all = functools.partial(jax.lax.map, one)
    else:  # every device maps over its own share of the runs
        spec = PartitionSpec(mesh.axis_names[0])
        train_all = jax.shard_map(functools.partial(jax.lax.map, one), mesh=mesh, in_specs=spec, out_specs=spec,
                                  check_vma=False)

    jit_kwargs = {} if mesh is None else {"in_shardings": in_shardings, "out_shardings": out_shardings}
    options = compiler_options() if vectorised else {}
    say(f"sweep: compiling {n} runs x {steps} steps ({method})" +
        (f" on {mesh.size} devices" if mesh is not None else ""))
    compiled = jax.jit(train_all, **jit_kwargs).lower(states).compile(compiler_options=options)
    t_compile = time.perf_counter()
    say("sweep: training")
    states, metrics = compiled(states)
    jax.block_until_ready(states)
    t_train = time.perf_counter()
    # one run at a time: the evaluation is cheap, and so it is bitwise `rnnjax train`'s
    evals = jax.jit(lambda p: jax.lax.map(lambda q: trainer.evaluate(q, eval_batch), p),
                    compiler_options=options)(states.params)
    evals, metrics, counters = jax.device_get(
        (evals, metrics, (states.step, states.skipped, states.consecutive_skips)))
    t_eval = time.perf_counter()
    if pad:
        states = jax.tree.map(lambda x: x[:n], states)
        metrics = {k: v[:n] for k, v in metrics.items()}
        evals = {k: v[:n] for k, v in evals.items()}
        counters = tuple(c[:n] for c in counters)

    rows = []
    for i, c in enumerate(configs):
        ran = ~np.asarray(metrics["halted"][i])
        last = np.flatnonzero(ran)
        rows.append({
            "init_gain": c.init_gain,
            "seed": c.seed,
            "lr": c.lr,
            "eval_seed": c.eval_seed,
            "eval_loss": _finite_or_none(evals["loss"][i]),
            "eval_accuracy": _finite_or_none(evals["accuracy"][i]) if "accuracy" in evals else None,
            "baseline_loss": trainer.task.baseline_loss,
            "final_train_loss": _finite_or_none(metrics["loss"][i][last[-1]]) if last.size else None,
            "skipped_steps": int(counters[1][i]),
            "steps": int(counters[0][i]),
            "status": "stopped_non_finite" if base.max_skips and int(counters[2][i]) >= base.max_skips else "completed",
        })
    timing = {"init_s": t_init - t_start, "compile_s": t_compile - t_init, "train_s": t_train - t_compile,
              "eval_s": t_eval - t_train, "total_s": t_eval - t_start}
    return SweepResult(rows, states, metrics, timing)


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


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _pad_runs(x, pad):
    return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


__all__ = ["METHODS", "RUN_AXIS", "SweepResult", "grid", "run_mesh", "run_sweep"]
