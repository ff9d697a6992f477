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
import math
import typing
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax._registry import make_cell
from rnnjax.models import Model, for_task

_DROPOUT_STREAM = 0xFFFFFFFF  # dropout keys: fold_in(fold_in(data_key, this), s); no step s reaches this
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
    clip: float | None = 0.0,
    name: str = "adam",
    **kwargs,
) -> optax.GradientTransformation:
    """``optax.chain(optax.clip_by_global_norm(clip), inject_hyperparams(OPT)(learning_rate))``.

    The learning rate lives in the optimizer state (``opt_state[-1].hyperparams["learning_rate"]``),
    a traced value: ``set_learning_rate`` replaces it, ``jax.vmap`` can batch it.

    Args:
      learning_rate: step size.
      clip: global-norm clipping threshold; ``0`` or ``None`` disables clipping.
      name: ``"adam"``, ``"sgd"``, ``"rmsprop"`` or ``"adamw"``.
      **kwargs: further arguments of the optax optimizer (e.g. ``b1``).

    Returns:
      An ``optax.GradientTransformation``.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"name: unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    if clip is None:
        clip = 0.0
    if isinstance(clip, bool) or not isinstance(clip, (int, float, np.number)) or not (math.isfinite(clip) and clip >= 0):
        raise ValueError(f"clip: expected a non-negative number (0 or None = off), got {clip!r}")
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


def check_model_fits_task(model: Model, task: Any) -> None:
    """Raise ``ValueError`` naming the mismatch when ``model`` cannot train on ``task``.

    Checks the sequence pattern, the loss (``"mse"`` needs float targets,
    ``"xent"`` class indices) and the input width of the (encoder) cell.
    """
    if model.pattern != task.pattern:
        raise ValueError(
            f"model: a {model.pattern} model cannot train on task {task.name!r}, whose pattern is {task.pattern}; "
            f"build it with rnnjax.models.{task.pattern} (or rnnjax.models.for_task(task, ...))"
        )
    if model.loss_name != task.loss:
        raise ValueError(f"model: loss {model.loss_name!r} does not fit task {task.name!r}, whose loss is "
                         f"{task.loss!r}")
    width = getattr(model, "input_size", None) or getattr(model.cell, "input_size", None)
    if width is not None and model.pattern != "one_to_many" and width != task.input_size:
        raise ValueError(f"model: the cell takes inputs of width {width}, task {task.name!r} gives width "
                         f"{task.input_size}; build the cell with input_size={task.input_size}")


class Trainer(NamedTuple):
    """A whole training run as pure functions (jit, vmap and scan them freely).

    Attributes:
      init: ``init(key, learning_rate=None) -> TrainState``; ``key`` is split
        into a parameter key and the data key; ``learning_rate`` (optional,
        traceable) overrides the optimizer's injected one.
      step: ``step(state) -> (state, metrics)``: draws the batch of step
        ``state.step`` (and its dropout key, from a stream of ``data_key`` of
        its own) and applies ``train_step``. Once ``consecutive_skips``
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
    batch_invariant: bool = False,
    objective: Callable[..., tuple[Any, dict]] | None = None,
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
      batch_invariant: build the step for a vectorised sweep (``make_train_step``;
        ``rnnjax.sweep.run_sweep(method="vmap")``). A single run never needs it.
      objective: ``objective(params, batch, step, loss) -> (value, aux)``: the
        scalar the step differentiates, from the task ``loss`` of ``batch`` at
        training step ``step`` (traced), e.g. ``flossing_objective``; its ``aux``
        scalars join the metrics. None: the task loss itself.

    Returns:
      A ``Trainer``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if max_skips is not None and (isinstance(max_skips, bool) or not isinstance(max_skips, int) or max_skips < 1):
        raise ValueError(f"max_skips: expected a positive integer or None, got {max_skips!r}")
    if streaming and task.stream is None:
        raise ValueError(f"streaming: task {task.name!r} defines no stream")
    check_model_fits_task(model, task)
    def loss_with_key(params, batch_key_step, *carry):  # the step's dropout key and index travel with its batch
        batch, key, step_index = batch_key_step
        loss, aux = model.loss(params, batch, *carry, key=key)
        if objective is None:
            return loss, aux
        value, extra = objective(params, batch, step_index, loss)
        return value, {**aux, **extra}

    train_step = make_train_step(loss_with_key, optimizer, has_aux=True, jit=False, batch_invariant=batch_invariant)
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
        dropout_key = jax.random.fold_in(jax.random.fold_in(state.data_key, _DROPOUT_STREAM), state.step)
        new_state, metrics = train_step(state, (batch, dropout_key, state.step))
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


def _field(default, help: str, *, loop: bool = False, metavar: str | None = None):
    """A ``RunConfig`` field: its default, the help text of its command-line flag, and whether it is a loop field."""
    return dataclasses.field(default=default, metadata={"help": help, "loop": loop, "metavar": metavar})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The settings of one training run: what ``rnnjax train`` writes to ``config.json``.

    The one definition of a run's settings: ``rnnjax train`` and ``rnnjax sweep``
    generate their flags from these fields (``--batch-size`` from
    ``batch_size``, the help from the field's metadata). Loop fields
    (``loop_fields()``: ``steps``, the logging/evaluation/checkpoint periods,
    ``max_skips``, ``tensorboard``) control the loop, not the result of a step,
    and may change on ``--resume``; every other field must match the stored run.

    Seeds: ``seed`` draws the parameters and the training batches
    (``run_key(seed)`` split into a parameter key and a data key); ``eval_seed``
    fixes the task's evaluation set. Every seed of a study is scored on the
    same evaluation set unless ``eval_seed`` is changed on purpose.
    """

    task: str = _field("adding", "task name (rnnjax.tasks.TASKS), e.g. adding, copy, digits, charlm")
    cell: str = _field("lstm", "cell name (rnnjax.CELLS; add your own with rnnjax.register_cell)")
    hidden: int = _field(64, "hidden size H")
    seq_len: int | None = _field(None, "sequence length T (default: the task's)")
    batch_size: int = _field(64, "batch size B")
    steps: int = _field(1000, "optimizer steps", loop=True)
    lr: float = _field(1e-3, "learning rate")
    clip: float = _field(1.0, "global gradient-norm clipping threshold; 0 = off")
    init_gain: float = _field(1.0, "scale of the recurrent initialisation")
    seed: int = _field(0, "seed of the parameters and the training data order")
    eval_seed: int = _field(0, "seed of the task's evaluation set (the same for every --seed)")
    optimizer: str = _field("adam", "adam, sgd, rmsprop or adamw")
    momentum: float = _field(0.0, "momentum of sgd or rmsprop (0 = none; adam's is its b1)")
    tbptt: int | None = _field(None, "truncated BPTT in chunks of K steps (state carried across batches for "
                               "streaming tasks)", metavar="K")
    remat: int = _field(0, "recompute the forward in the backward pass: checkpointed segments of K steps "
                        "(K ~ sqrt(T) saves most memory); 0 = off", metavar="K")
    bidirectional: bool = _field(False, "bidirectional recurrent layers (forward and backward outputs concatenated)")
    layers: int = _field(1, "number of stacked recurrent layers")
    dropout: float = _field(0.0, "dropout probability between stacked layers (training only)")
    embed: int = _field(0, "embed the task's tokens into E-wide learnt vectors (many_to_one/many_to_many); 0 = "
                        "one-hot inputs", metavar="E")
    pool: str = _field("last", "many_to_one readout: last (last valid output) or mean (mean over valid steps)")
    attention: bool = _field(False, "seq2seq: Luong attention of the decoder over the encoder outputs")
    task_options: tuple = _field((), "task options as sorted (key, value) pairs")
    max_skips: int = _field(20, "stop after N consecutive skipped (non-finite) steps", loop=True, metavar="N")
    eval_every: int = _field(0, "evaluate (and checkpoint) every N steps; 0 = at the end only", loop=True,
                             metavar="N")
    checkpoint_every: int = _field(0, "also checkpoint every N steps (default 500)", loop=True, metavar="N")
    log_every: int = _field(1, "write every N-th step to the metrics", loop=True, metavar="N")
    gradflow_every: int = _field(0, "every N steps log ||dL/dh_t|| for all t (mean over 16 evaluation sequences)",
                                 loop=True, metavar="N")
    tensorboard: bool = _field(False, "also write TensorBoard event files to DIR/tensorboard", loop=True)
    lyapunov_every: int = _field(0, "every N steps log the top --lyapunov-k Lyapunov exponents on 8 evaluation "
                                 "sequences to lyapunov.jsonl; 0 = off", loop=True, metavar="N")
    lyapunov_k: int = _field(3, "number of Lyapunov exponents logged by --lyapunov-every", loop=True, metavar="K")
    floss_k: int = _field(0, "gradient flossing: push the top K Lyapunov exponents of the batch's trajectories "
                          "towards 0 (rnnjax.dynamics.flossing_loss); 0 = off", metavar="K")
    floss_weight: float = _field(1.0, "weight of the flossing loss added to the task loss")
    floss_every: int = _field(1, "floss on every N-th step after the pretraining; 0 = only during --floss-pretrain",
                              metavar="N")
    floss_pretrain: int = _field(0, "the first N steps optimise the flossing loss alone (no task loss)",
                                 metavar="N")

    @staticmethod
    def loop_fields() -> tuple[str, ...]:
        """Fields that control the loop, not the arithmetic of a step (they may change on resume)."""
        return tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["loop"])

    def validate(self) -> "RunConfig":
        """Check every field's type and range; return ``self``.

        Raises:
          ValueError: the message starts with the field's name (``"hidden: expected ..."``).
        """
        def integer(name, minimum, optional=False):
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                extra = " or None" if optional else ""
                raise ValueError(f"{name}: expected an integer >= {minimum}{extra}, got {value!r}")

        def number(name, positive):
            value = getattr(self, name)
            ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or (value <= 0 if positive else value < 0):
                want = "a positive number" if positive else "a non-negative number (0 = off)"
                raise ValueError(f"{name}: expected {want}, got {value!r}")

        for name in ("hidden", "batch_size", "steps", "layers", "max_skips", "log_every"):
            integer(name, 1)
        for name in ("eval_every", "checkpoint_every", "gradflow_every", "remat", "lyapunov_every", "floss_k",
                     "floss_every", "floss_pretrain"):
            integer(name, 0)
        integer("lyapunov_k", 1)
        number("floss_weight", False)
        if self.floss_k and not (self.floss_every or self.floss_pretrain):
            raise ValueError(f"floss_every: expected a positive integer when floss_pretrain is 0 (flossing with "
                             f"floss_k={self.floss_k} would never run), got {self.floss_every!r}")
        integer("seq_len", 1, optional=True)
        integer("tbptt", 1, optional=True)
        integer("seed", -(2**63))
        integer("eval_seed", -(2**63))
        number("lr", True)
        number("init_gain", True)
        number("clip", False)
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")
        integer("embed", 0)
        if self.pool not in ("last", "mean"):
            raise ValueError(f"pool: expected 'last' or 'mean', got {self.pool!r}")
        for name in ("bidirectional", "tensorboard", "attention"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: unknown optimizer {self.optimizer!r}; expected one of {sorted(OPTIMIZERS)}")
        number("momentum", False)
        if self.momentum >= 1:
            raise ValueError(f"momentum: expected a number in [0, 1), got {self.momentum!r}")
        if self.momentum and self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum: optimizer {self.optimizer!r} takes none (only sgd and rmsprop; adam's is b1)")
        return self

    def to_json(self) -> dict:
        """A JSON-ready dict (``task_options`` as a dict)."""
        d = dataclasses.asdict(self)
        d["task_options"] = dict(self.task_options)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "RunConfig":
        """The inverse of ``to_json``; unknown keys are ignored.

        A config written before ``eval_seed`` existed evaluated on the set of its ``seed``: it keeps it.

        Raises:
          ValueError: a value of the wrong type (named).
        """
        d = dict(d)
        if "eval_seed" not in d and "seed" in d:
            d["eval_seed"] = d["seed"]
        d["task_options"] = tuple(sorted(dict(d.get("task_options") or {}).items()))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names}).validate()

    def train_argv(self, out: str) -> list[str]:
        """The ``rnnjax train`` arguments that reproduce this run into ``out`` (non-default fields only).

        Flags are the field names with dashes (``batch_size`` -> ``--batch-size``); task options become
        ``--task-option KEY=VALUE`` (``text_file`` becomes ``--text FILE``).
        """
        hints = typing.get_type_hints(RunConfig)
        argv = ["train"]
        default = RunConfig()
        for f in dataclasses.fields(self):
            if f.name == "task_options":
                continue
            value = getattr(self, f.name)
            if f.name not in ("task", "cell") and value == getattr(default, f.name):
                continue
            name = "--" + f.name.replace("_", "-")
            if hints[f.name] is bool:
                argv.append(name)
            else:
                argv += [name, repr(value) if isinstance(value, float) else str(value)]
        for key, value in self.task_options:
            if key == "text_file":
                argv += ["--text", value]
            else:
                argv += ["--task-option", f"{key}={'none' if value is None else value}"]
        return argv + ["--out", out]

    def differences(self, other: "RunConfig") -> list[str]:
        """Names of the non-loop fields in which ``self`` and ``other`` differ."""
        loop = self.loop_fields()
        return [f.name for f in dataclasses.fields(self)
                if f.name not in loop and getattr(self, f.name) != getattr(other, f.name)]


def build(config: RunConfig, *, batch_invariant: bool = False) -> Trainer:
    """Task, model, optimizer and ``Trainer`` for ``config`` (the pieces ``rnnjax train`` uses).

    Args:
      config: the run's settings (validated here).
      batch_invariant: build the step for a vectorised sweep (``make_train_step``);
        a single run never needs it.

    Raises:
      ValueError: an unknown task/cell/optimizer or invalid values (the message starts with the field's name).
    """
    from rnnjax.tasks import get_task

    config.validate()
    task = get_task(config.task, seq_len=config.seq_len, seed=config.eval_seed, **dict(config.task_options))
    make_cell(config.cell, 1, 1, init_gain=config.init_gain)  # validates name and gain early
    factory = functools.partial(make_cell, config.cell, init_gain=config.init_gain)
    model = for_task(task, factory, config.hidden, **_model_options(config))
    # momentum, when set, is an injected hyper-parameter like the learning rate (a value in the state)
    extra = {"momentum": config.momentum} if config.momentum else {}
    optimizer = make_optimizer(config.lr, clip=config.clip, name=config.optimizer, **extra)
    streaming = config.tbptt is not None and task.stream is not None
    objective = None
    if config.floss_k:
        objective = flossing_objective(model, task, config.floss_k, weight=config.floss_weight,
                                       every=config.floss_every, pretrain=config.floss_pretrain)
    return make_trainer(model, task, optimizer, batch_size=config.batch_size, max_skips=config.max_skips,
                        streaming=streaming, batch_invariant=batch_invariant, objective=objective)


def dynamics_cell(model: Model, task: Any, name: str) -> Any:
    """The ``Cell`` whose step drives ``model`` on ``task``'s inputs (for Lyapunov spectra and flossing).

    Raises:
      ValueError: starting with ``name``, when the model is not a single-direction many-to-one or many-to-many
        model of one ``rnnjax.Cell`` (a stack counts) reading the task's inputs directly.
    """
    from rnnjax._cells import Cell

    if model.pattern not in ("many_to_one", "many_to_many") or not isinstance(model.cell, Cell):
        raise ValueError(f"{name}: needs a many_to_one or many_to_many model of one rnnjax.Cell (no bidirectional "
                         f"or dropout layers), got a {model.pattern} model of {type(model.cell).__name__}")
    if model.cell.input_size != task.input_size:
        raise ValueError(f"{name}: needs a cell that reads the task's inputs (width {task.input_size}), got one of "
                         f"width {model.cell.input_size} (no --embed)")
    return model.cell


def flossing_objective(model: Model, task: Any, k: int, *, weight: float = 1.0, every: int = 1,
                       pretrain: int = 0) -> Callable[..., tuple[Any, dict]]:
    """Gradient flossing as a ``make_trainer`` objective: task loss plus ``weight`` times the flossing loss.

    At step ``s``: ``objective = [s >= pretrain] * loss + weight * F * floss``,
    ``floss`` the mean over the batch's sequences of
    ``rnnjax.dynamics.flossing_loss(cell, params.cell, x, k, transient=T // 10)``
    (the trajectory from the zero carry, as the model runs it) and ``F`` = 1
    on flossing steps (``s < pretrain``, or ``every > 0`` and ``s % every == 0``),
    else 0 (computed only then: ``lax.cond``). Both gradients join inside the
    one jitted step, so any optax optimizer applies to their sum.

    Args:
      model, task: the run's model (see ``dynamics_cell``) and task.
      k: exponents to floss, ``>= 1``.
      weight: of the flossing loss, ``>= 0``.
      every: floss every ``every``-th step after the pretraining (0: never).
      pretrain: the first ``pretrain`` steps optimise the flossing loss alone.

    Returns:
      ``objective(params, batch, step, loss) -> (value, {"floss": floss or NaN off flossing steps})``.

    References:
      Engelken, "Gradient flossing", NeurIPS 2023, arXiv:2312.17306 (Sec. 3; flossing before and during training).
    """
    from rnnjax import dynamics

    from rnnjax._carry import carry_size

    cell = dynamics_cell(model, task, "floss_k")
    n = carry_size(cell)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"floss_k: expected an integer in [1, {n}] (the carry has {n} real entries), got {k!r}")

    def objective(params, batch, step, loss):
        xs = batch.inputs
        transient = xs.shape[1] // 10

        def floss_fn(p):
            per_seq = jax.vmap(lambda x: dynamics.flossing_loss(cell, p, x, k, transient=transient))(xs)
            return jnp.mean(per_seq).astype(loss.dtype)

        on = step < pretrain
        if every:
            on = on | (step % every == 0)
        floss = jax.lax.cond(on, floss_fn, lambda p: jnp.zeros((), loss.dtype), params.cell)
        task_part = jnp.where(step < pretrain, jnp.zeros_like(loss), loss)
        return task_part + weight * floss, {"floss": jnp.where(on, floss, jnp.nan)}

    return objective


def _model_options(config: RunConfig) -> dict:
    """The ``for_task`` keyword arguments of ``config`` (only the non-default ones, so plain runs need nothing new)."""
    options = {"tbptt": config.tbptt}
    if config.remat:
        options["remat"] = config.remat
    if config.bidirectional:
        options["bidirectional"] = True
    if config.layers != 1:
        options["layers"] = config.layers
    if config.dropout:
        options["dropout"] = config.dropout
    if config.embed:
        options["embed"] = config.embed
    if config.pool != "last":
        options["pool"] = config.pool
    if config.attention:
        options["attention"] = True
    return options


# XLA:CPU lowers a reduction to a YNNPACK kernel or to its own tree reduction depending on the
# shape, and its fusion emitters order a reduction over (time, batch) differently once a run axis
# sits between them: without these two settings a vmapped run's gradients differ from the
# unbatched run's in the last bit.
_CPU_BATCH_INVARIANT_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_DOT",
    "xla_cpu_use_fusion_emitters": False,
}


def compiler_options() -> dict:
    """XLA options under which a run's bits do not depend on a vmapped run axis (opt-in, for vectorised sweeps).

    A single run never needs them: ``rnnjax train`` and the default sweep
    (``rnnjax.sweep.run_sweep(method="map")``) compile with XLA's defaults and
    agree bit for bit by construction. Only ``method="vmap"`` uses them: with
    them, and trainers built with ``batch_invariant=True``, each row of a
    ``jax.vmap``-ed sweep equals the run of ``build(config,
    batch_invariant=True)`` compiled with the same options, bit for bit on CPU
    (at 1.2-1.5x the cost per step, ``benchmarks/results/batch_invariance_cost.md``).
    Empty on other backends.
    """
    return dict(_CPU_BATCH_INVARIANT_OPTIONS) if jax.default_backend() == "cpu" else {}


def run_key(seed: int) -> jax.Array:
    """The key from which a run with ``--seed seed`` draws its parameters and data (``jax.random.key(seed)``)."""
    return jax.random.key(seed)
