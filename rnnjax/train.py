"""Training with optax: a pure, jitted ``train_step`` with a non-finite guard, and whole runs as pure functions.

Two levels:

- ``make_train_step(loss_fn, optimizer)`` -> ``train_step(state, batch) -> (state, metrics)``:
  one optimizer update on a given batch. A step whose loss, gradients or
  resulting parameters/optimizer state hold a NaN or Inf is *skipped*: params
  and optimizer state stay unchanged (tree-wise ``jnp.where``), the skip is
  counted.
- ``make_trainer(model, task, optimizer, batch_size=...)`` -> ``Trainer`` of pure
  functions ``init(key) -> state`` and ``run(state, num_steps) -> (state,
  metrics)`` (a ``lax.scan`` over steps, purejaxrl style). The batch of step
  ``s`` is ``task.sample(fold_in(data_key, s), batch_size)``, so a resumed run
  and every member of a ``jax.vmap``-ed sweep see exactly the data of the
  uninterrupted single run. ``init`` takes an optional (traceable)
  ``learning_rate``: the optimizer built by ``make_optimizer`` keeps it in
  its state (``optax.inject_hyperparams``), so ``jax.vmap(trainer.init)(keys,
  lrs)`` followed by ``jax.vmap(trainer.run)`` trains many runs in one program.

References:
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
  networks", ICML 2013 (gradient-norm clipping, Algorithm 1).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnjax._registry import make_cell
from rnnjax.models import Model, for_task

_INJECT_STATES = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd, "rmsprop": optax.rmsprop, "adamw": optax.adamw}


class TrainState(NamedTuple):
    """Everything a training run carries from one step to the next (a pytree; checkpoint it whole).

    Attributes:
      params: model parameters.
      opt_state: optimizer state (holds the learning rate when built by ``make_optimizer``).
      step: int32 scalar, number of steps taken (applied or skipped).
      data_key: PRNG key; step ``s`` draws its batch from ``fold_in(data_key, s)``.
      skipped: int32 scalar, total number of skipped (non-finite) steps.
      consecutive_skips: int32 scalar, skipped steps since the last applied one.
      carry: batched model carry continued across batches (streaming truncated BPTT), else None.
      data_state: ``Task.stream`` state (streaming), else None.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    data_key: jax.Array
    skipped: jax.Array
    consecutive_skips: jax.Array
    carry: Any = None
    data_state: Any = None


def all_finite(tree: Any) -> jax.Array:
    """Boolean scalar: every inexact leaf of ``tree`` is finite (True for a tree without float leaves)."""
    leaves = [
        jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def tree_where(cond: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Leaf-wise ``jnp.where(cond, a, b)`` over two pytrees of the same structure (``cond`` a scalar)."""
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), on_true, on_false)


def make_optimizer(
    learning_rate: float,
    *,
    clip: float = 0.0,
    name: str = "adam",
    **kwargs,
) -> optax.GradientTransformation:
    """``optax.chain(optax.clip_by_global_norm(clip), inject_hyperparams(OPT)(learning_rate))``.

    The learning rate lives in the optimizer state (``opt_state[-1].hyperparams["learning_rate"]``),
    a traced value: ``set_learning_rate`` replaces it, ``jax.vmap`` can batch it.

    Args:
      learning_rate: step size.
      clip: global-norm clipping threshold; ``0`` disables clipping.
      name: ``"adam"``, ``"sgd"``, ``"rmsprop"`` or ``"adamw"``.
      **kwargs: further arguments of the optax optimizer (e.g. ``b1``).

    Returns:
      An ``optax.GradientTransformation``.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"name: unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    if not clip >= 0:
        raise ValueError(f"clip: expected a non-negative number (0 = off), got {clip!r}")
    opt = optax.inject_hyperparams(OPTIMIZERS[name])(learning_rate=learning_rate, **kwargs)
    if clip > 0:
        return optax.chain(optax.clip_by_global_norm(clip), opt)
    return optax.chain(opt)


def set_learning_rate(opt_state: Any, learning_rate: Any) -> Any:
    """Replace the ``learning_rate`` hyperparameter of every ``inject_hyperparams`` state in ``opt_state``.

    Raises:
      ValueError: ``opt_state`` holds no injected ``learning_rate``.
    """
    found = []

    def visit(s):
        if isinstance(s, _INJECT_STATES) and "learning_rate" in s.hyperparams:
            found.append(True)
            old = s.hyperparams["learning_rate"]
            hp = dict(s.hyperparams, learning_rate=jnp.asarray(learning_rate, jnp.result_type(old)))
            return s._replace(hyperparams=hp)
        if isinstance(s, tuple) and not hasattr(s, "_fields"):
            return tuple(visit(x) for x in s)
        return s

    new = visit(opt_state)
    if not found:
        raise ValueError("opt_state: no inject_hyperparams state with a learning_rate (build it with make_optimizer)")
    return new


def make_train_step(
    loss_fn: Callable[..., Any],
    optimizer: optax.GradientTransformation,
    *,
    has_aux: bool = False,
    jit: bool = True,
    batch_invariant: bool = False,
) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
    """A pure ``train_step(state, batch) -> (state, metrics)`` on ``optimizer``.

    ``loss_fn(params, batch) -> loss`` (or ``(loss, aux)`` with ``has_aux``; aux
    a dict of scalars). When ``state.carry`` is not None it is called as
    ``loss_fn(params, batch, carry)`` and must return ``(loss, aux)`` with
    ``aux["carry"]`` the carry for the next batch.

    The step is applied only if the loss, the gradients, their global norm, the
    new parameters and the new optimizer state are all finite; otherwise params, optimizer state
    and carry are left unchanged and the skip is counted. ``state.step`` always
    advances.

    Args:
      loss_fn: scalar loss of ``params`` on ``batch``.
      optimizer: any ``optax.GradientTransformation`` (clip with
        ``optax.clip_by_global_norm`` inside it).
      has_aux: ``loss_fn`` returns ``(loss, aux)``.
      jit: wrap in ``jax.jit`` (turn off to vmap/scan it inside a larger program;
        it stays traceable either way).
      batch_invariant: make ``jax.vmap(train_step)`` give every run the bits
        of the unbatched step (what ``rnnjax.sweep`` relies on). The update
        (optimizer, guard) becomes its own computation, ``lax.cond`` on a
        finite loss, run one run at a time under ``jax.vmap``
        (``jax.custom_batching.sequential_vmap``); only the loss and gradients
        are vectorised. Compile with ``compiler_options()`` as well. Without
        it, a vmapped update divides by per-run scalars that XLA rewrites to
        reciprocal multiplies and fuses (and contracts to FMAs) differently.

    Returns:
      ``train_step``; ``metrics`` is a dict with ``loss``, ``grad_norm`` (global
      gradient norm before clipping), ``applied`` and ``skipped`` (bool
      scalars) and the scalar entries of ``aux``.
    """

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        stateful = state.carry is not None
        if stateful:
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, state.carry)
            aux = dict(aux)
            new_carry = aux.pop("carry")
        else:
            if has_aux:
                (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
                aux = dict(aux)
            else:
                loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
                aux = {}
            new_carry = None
        return update(state, loss, grads, aux, new_carry)

    def apply_update(state, loss, grads, aux, new_carry):
        stateful = state.carry is not None
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # An overflowing global norm (finite gradients whose norm is inf in float32) would make
        # clip_by_global_norm scale every update to zero: count such a step as skipped, not applied.
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(grads) & all_finite(params) & all_finite(opt_state)
        if stateful:
            ok = ok & all_finite(new_carry)
            new_carry = tree_where(ok, new_carry, state.carry)
        skipped = jnp.logical_not(ok)
        new_state = state._replace(
            params=tree_where(ok, params, state.params),
            opt_state=tree_where(ok, opt_state, state.opt_state),
            step=state.step + 1,
            skipped=state.skipped + skipped.astype(state.skipped.dtype),
            consecutive_skips=jnp.where(ok, 0, state.consecutive_skips + 1).astype(state.consecutive_skips.dtype),
            carry=new_carry,
        )
        metrics = {"loss": loss, "grad_norm": grad_norm, "applied": ok, "skipped": skipped, **aux}
        return new_state, metrics

    def skip_update(state, loss, grads, aux, new_carry):  # = apply_update when the loss is not finite
        del new_carry
        new_state = state._replace(
            step=state.step + 1,
            skipped=state.skipped + jnp.ones((), state.skipped.dtype),
            consecutive_skips=(state.consecutive_skips + 1).astype(state.consecutive_skips.dtype),
        )
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "applied": jnp.array(False),
                   "skipped": jnp.array(True), **aux}
        return new_state, metrics

    def guarded_update(state, loss, grads, aux, new_carry):  # its own HLO computation, as in the unbatched step
        return jax.lax.cond(jnp.isfinite(loss), apply_update, skip_update, state, loss, grads, aux, new_carry)

    update = jax.custom_batching.sequential_vmap(guarded_update) if batch_invariant else apply_update
    return jax.jit(train_step) if jit else train_step


class Trainer(NamedTuple):
    """A whole training run as pure functions (jit, vmap and scan them freely).

    Attributes:
      init: ``init(key, learning_rate=None) -> TrainState``; ``key`` is split
        into a parameter key and the data key; ``learning_rate`` (optional,
        traceable) overrides the optimizer's injected one.
      step: ``step(state) -> (state, metrics)``: draws the batch of step
        ``state.step`` and applies ``train_step``. Once ``consecutive_skips``
        reached ``max_skips`` it is a no-op (``metrics["halted"]`` True).
      run: ``run(state, num_steps) -> (state, metrics)`` — ``num_steps``
        (static) steps in one ``lax.scan``; metrics stacked ``(num_steps,)``.
      evaluate: ``evaluate(params, batch=None) -> dict`` (``loss``, ``accuracy``
        for ``"xent"``) on ``batch`` or the task's evaluation set.
      model, task, optimizer, batch_size: what the run is made of.
    """

    init: Callable[..., TrainState]
    step: Callable[[TrainState], tuple[TrainState, dict]]
    run: Callable[[TrainState, int], tuple[TrainState, dict]]
    evaluate: Callable[..., dict]
    model: Model
    task: Any
    optimizer: optax.GradientTransformation
    batch_size: int


def make_trainer(
    model: Model,
    task: Any,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int,
    max_skips: int | None = None,
    streaming: bool = False,
) -> Trainer:
    """Build the pure functions of a training run (see ``Trainer``); nothing is jitted here.

    Args:
      model: an ``rnnjax.models.Model`` whose pattern/loss fit ``task``.
      task: an ``rnnjax.tasks.Task``.
      optimizer: any ``optax.GradientTransformation``.
      batch_size: B (static).
      max_skips: stop after this many consecutive skipped steps (None: never).
      streaming: draw batches from ``task.stream`` and carry the model state
        across batches (truncated BPTT over a contiguous stream; the task must
        define ``stream``).

    Returns:
      A ``Trainer``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if max_skips is not None and (isinstance(max_skips, bool) or not isinstance(max_skips, int) or max_skips < 1):
        raise ValueError(f"max_skips: expected a positive integer or None, got {max_skips!r}")
    if streaming and task.stream is None:
        raise ValueError(f"streaming: task {task.name!r} defines no stream")
    train_step = make_train_step(model.loss, optimizer, has_aux=True, jit=False, batch_invariant=True)
    stream_next = task.stream(jax.random.key(0), batch_size)[1] if streaming else None

    def init(key, learning_rate=None):
        k_param, k_data = jax.random.split(key)
        params = model.init(k_param)
        opt_state = optimizer.init(params)
        if learning_rate is not None:
            opt_state = set_learning_rate(opt_state, learning_rate)
        zero = jnp.zeros((), jnp.int32)
        carry, data_state = None, None
        if streaming:
            data_state = task.stream(k_data, batch_size)[0]
            carry = model.initial_carry(batch_size)
            dtype = jnp.result_type(*jax.tree.leaves(params))
            carry = jax.tree.map(lambda c: c.astype(dtype), carry)
        return TrainState(params, opt_state, zero, k_data, zero, zero, carry, data_state)

    def step(state):
        if streaming:
            data_state, batch = stream_next(state.data_state)
        else:
            data_state = state.data_state
            batch = task.sample(jax.random.fold_in(state.data_key, state.step), batch_size)
        new_state, metrics = train_step(state, batch)
        new_state = new_state._replace(data_state=data_state)
        if max_skips is None:
            return new_state, {**metrics, "halted": jnp.array(False)}
        halted = state.consecutive_skips >= max_skips
        return tree_where(halted, state, new_state), {**metrics, "halted": halted}

    def run(state, num_steps):
        return jax.lax.scan(lambda s, _: step(s), state, None, length=num_steps)

    def evaluate(params, batch=None):
        batch = task.eval_batch() if batch is None else batch
        return model.evaluate(params, batch)

    return Trainer(init, step, run, evaluate, model, task, optimizer, batch_size)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The settings of one training run (what ``rnnjax train`` writes to ``config.json``).

    ``steps``, ``eval_every``, ``checkpoint_every``, ``log_every``,
    ``gradflow_every`` and ``max_skips`` control the loop, not the result of
    a step, and may change on ``--resume``.
    """

    task: str = "adding"
    cell: str = "lstm"
    hidden: int = 64
    seq_len: int | None = None
    batch_size: int = 64
    steps: int = 1000
    lr: float = 1e-3
    clip: float = 1.0
    init_gain: float = 1.0
    seed: int = 0
    optimizer: str = "adam"
    tbptt: int | None = None
    task_options: tuple = ()
    max_skips: int = 20
    eval_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 1
    gradflow_every: int = 0

    LOOP_FIELDS = ("steps", "eval_every", "checkpoint_every", "log_every", "gradflow_every", "max_skips")


def build(config: RunConfig) -> Trainer:
    """Task, model, optimizer and ``Trainer`` for ``config`` (the pieces ``rnnjax train`` uses).

    Raises:
      ValueError: an unknown task/cell/optimizer or invalid sizes (the message names the field).
    """
    from rnnjax.tasks import get_task

    for name in ("hidden", "batch_size", "steps"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if config.tbptt is not None and (not isinstance(config.tbptt, int) or config.tbptt < 1):
        raise ValueError(f"tbptt: expected a positive integer, got {config.tbptt!r}")
    if not config.lr > 0:
        raise ValueError(f"lr: expected a positive number, got {config.lr!r}")
    task = get_task(config.task, seq_len=config.seq_len, seed=config.seed, **dict(config.task_options))
    make_cell(config.cell, 1, 1, init_gain=config.init_gain)  # validates name and gain early
    factory = functools.partial(make_cell, config.cell, init_gain=config.init_gain)
    model = for_task(task, factory, config.hidden, tbptt=config.tbptt)
    optimizer = make_optimizer(config.lr, clip=config.clip, name=config.optimizer)
    streaming = config.tbptt is not None and task.stream is not None
    return make_trainer(model, task, optimizer, batch_size=config.batch_size, max_skips=config.max_skips,
                        streaming=streaming)


# XLA:CPU lowers a reduction to a YNNPACK kernel or to its own tree reduction depending on the
# shape, and its fusion emitters order a reduction over (time, batch) differently once a run axis
# sits between them: without these two settings a vmapped run's gradients differ from the
# unbatched run's in the last bit. Both programs (`rnnjax train`, `rnnjax sweep`) compile with them.
_CPU_BATCH_INVARIANT_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_DOT",
    "xla_cpu_use_fusion_emitters": False,
}


def compiler_options() -> dict:
    """XLA options of every training program, so that a run's bits do not depend on a vmapped run axis.

    Pass them to ``jax.jit(..., compiler_options=compiler_options())`` for the
    training scan and the evaluation (``rnnjax train`` and ``rnnjax.sweep`` do):
    with them, and a ``Trainer`` from ``make_trainer`` (``batch_invariant``
    update), each row of a ``jax.vmap``-ed sweep equals the separate run bit
    for bit on CPU. Empty on other backends.
    """
    return dict(_CPU_BATCH_INVARIANT_OPTIONS) if jax.default_backend() == "cpu" else {}


def run_key(seed: int) -> jax.Array:
    """The key from which a run with ``--seed seed`` draws its parameters and data (``jax.random.key(seed)``)."""
    return jax.random.key(seed)
