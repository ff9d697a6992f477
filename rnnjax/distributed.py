"""Data parallelism across devices and hosts with ``jax.sharding``: the batch is sharded, the params replicated.

One mesh axis, ``"batch"``, spans the devices. Inputs of a jitted step carry
``NamedSharding``s (state replicated, batch split along its leading axis) and
XLA's SPMD partitioner inserts the gradient all-reduce, so a data-parallel
step computes the same numbers as the one-device step up to the order of the
float reductions — no change to the loss, the model or the optimizer.

Two ways in:

- any step ``step(state, batch) -> (state, metrics)`` (for example
  ``rnnjax.make_train_step(loss_fn, optimizer, jit=False)``):
  ``data_parallel(step, mesh)`` jits it with the batch sharded; feed it
  ``shard_batch(batch, mesh)`` and ``replicate(state, mesh)``.
- a whole run (``rnnjax.train.Trainer``, whose steps draw their batches
  inside the compiled program): ``data_parallel_trainer(trainer, mesh, ...)``
  constrains every drawn batch to the batch sharding; ``data_parallel_run``
  jits ``run`` with the state replicated. ``rnnjax train --devices N`` uses it.

Devices. On CPU, XLA exposes one host device unless told otherwise; each
host device runs its share of the batch on its own thread, which is how a
data-parallel step uses several cores. ``request_host_devices(n)`` asks for
``n`` CPU devices (it must run before JAX initialises its backend, i.e. before
the first JAX operation; the environment variable
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` does the same from the
shell). On GPU/TPU the devices are the accelerators.

Multi-host. Start one process per host with the same program and call
``initialize(coordinator_address, num_processes, process_id)`` before any other
JAX call; ``jax.devices()`` then lists the devices of all hosts and the mesh
spans them. For two hosts (host 0 reachable as ``10.0.0.1``)::

    # on host 0
    rnnjax train --task adding --cell lstm --batch-size 64 --devices 8 \\
        --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0 --out runs/dp
    # on host 1
    rnnjax train --task adding --cell lstm --batch-size 64 --devices 8 \\
        --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 1 --out runs/dp

``--devices`` counts the devices of all hosts (here 4 per host). Instead of
the three flags, the variables ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` may be set (read by
``initialize_from_env``, which ``rnnjax train`` calls). On CPU the collectives
between processes go through gloo over TCP.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "batch"

_FORCE_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


# ------------------------------------------------------------------------------------------ devices
def backend_initialized() -> bool:
    """True once JAX has created its backends (after that the CPU device count is fixed)."""
    from jax._src import xla_bridge  # no public equivalent

    return xla_bridge.backends_are_initialized()


def forced_host_device_count() -> int | None:
    """The CPU device count requested through ``jax_num_cpu_devices`` or ``XLA_FLAGS``, or None."""
    configured = jax.config.jax_num_cpu_devices
    if configured is not None and configured >= 0:
        return int(configured)
    match = _FORCE_FLAG.search(os.environ.get("XLA_FLAGS", ""))
    return int(match.group(1)) if match else None


def request_host_devices(n: int) -> bool:
    """Ask XLA for at least ``n`` CPU host devices (one thread each) — before JAX initialises.

    Only the count of CPU devices changes; on a GPU/TPU machine the default
    devices are still the accelerators. The request is limited to the number
    of cores (``os.cpu_count()``) unless ``XLA_FLAGS`` or
    ``jax_num_cpu_devices`` already ask for more (e.g. to simulate 4 devices on
    2 cores in tests); a larger ``n`` is left for ``batch_mesh`` to reject.

    Args:
      n: the number of devices wanted.

    Returns:
      True if the CPU device count was (re)configured, False if nothing had to
      change or the backend was already initialised (then the count is fixed).
    """
    _check_count("devices", n)
    current = forced_host_device_count()
    if (current is not None and current >= n) or backend_initialized():
        return False
    want = min(n, os.cpu_count() or 1)
    if want <= (current or 1):
        return False
    jax.config.update("jax_num_cpu_devices", want)
    return True


def batch_mesh(devices: int | Sequence[jax.Device] | None = None, *, axis_name: str = DATA_AXIS) -> Mesh:
    """A one-axis ``Mesh`` over which the batch is split.

    Args:
      devices: None (every device, ``jax.devices()``), an int N (the first N
        devices) or an explicit sequence of devices.
      axis_name: the mesh axis name (``"batch"``).

    Returns:
      ``Mesh(devices, (axis_name,))``.

    Raises:
      ValueError: ``devices`` is not a positive integer or asks for more
        devices than exist (the message names both counts and how to get more
        CPU devices).
    """
    available = jax.devices()
    if devices is None:
        chosen = list(available)
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        n = _check_count("devices", int(devices))
        if n > len(available):
            platform = available[0].platform
            hint = (
                f" (this host has {os.cpu_count()} cores; start with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={n} to simulate {n} CPU devices)"
                if platform == "cpu"
                else ""
            )
            raise ValueError(
                f"devices: requested {n} devices but only {len(available)} {platform} device"
                f"{'s are' if len(available) != 1 else ' is'} available{hint}"
            )
        chosen = list(available[:n])
    else:
        chosen = list(devices) if isinstance(devices, (list, tuple, np.ndarray)) else []
        if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
            raise ValueError(
                f"devices: expected None, a positive integer or a sequence of jax devices, got {devices!r}")
    return Mesh(np.array(chosen), (axis_name,))


def check_batch_size(batch_size: int, mesh: Mesh, *, axis_name: str = DATA_AXIS) -> int:
    """Return ``batch_size`` if it splits evenly over the mesh axis, else raise.

    Raises:
      ValueError: naming ``batch_size`` and ``devices`` and the nearest valid sizes.
    """
    n = mesh.shape[axis_name]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if batch_size % n:
        raise ValueError(
            f"batch_size: {batch_size} is not divisible by devices={n}; each device needs an equal share "
            f"(use batch_size {_nearest_multiples(batch_size, n)}, or another device count)"
        )
    return int(batch_size)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of a value held whole on every device of ``mesh`` (params, optimizer state)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, *, axis_name: str = DATA_AXIS) -> NamedSharding:
    """The sharding of an array split along its leading (batch) axis over ``mesh``."""
    return NamedSharding(mesh, PartitionSpec(axis_name))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` whole on every device of ``mesh`` (``jax.device_put``)."""
    return jax.device_put(tree, replicated(mesh))


def _leading_sharding(leaf, mesh, axis_name, batch_size):
    shape = np.shape(leaf)
    if len(shape) == 0 or (batch_size is not None and shape[0] != batch_size):
        return replicated(mesh)
    return batch_sharded(mesh, axis_name=axis_name)


def shard_batch(batch: Any, mesh: Mesh, *, axis_name: str = DATA_AXIS) -> Any:
    """Split every array of ``batch`` along its leading axis (B) over ``mesh``.

    Args:
      batch: a pytree of arrays with a common leading axis B (``None`` leaves allowed).
      mesh: from ``batch_mesh``.

    Returns:
      The same tree, each leaf a ``jax.Array`` with ``B / devices`` rows per device.

    Raises:
      ValueError: the leaves disagree on B, or B is not divisible by the device count.
    """
    sizes = {np.shape(x)[0] for x in jax.tree.leaves(batch) if np.ndim(x) > 0}
    if len(sizes) > 1:
        raise ValueError(f"batch: expected one leading batch size for every array, got {sorted(sizes)}")
    if sizes:
        check_batch_size(sizes.pop(), mesh, axis_name=axis_name)
    return jax.tree.map(lambda x: jax.device_put(x, _leading_sharding(x, mesh, axis_name, None)), batch)


def constrain_batch(batch: Any, mesh: Mesh, batch_size: int, *, axis_name: str = DATA_AXIS) -> Any:
    """Inside ``jit``: annotate every leaf with leading axis ``batch_size`` as split over ``mesh``.

    ``jax.lax.with_sharding_constraint`` only tells the partitioner where the
    rows live; values are unchanged. Leaves of another leading size (or
    scalars) are left replicated.
    """
    if mesh.shape[axis_name] == 1:
        return batch

    def one(x):
        return jax.lax.with_sharding_constraint(x, _leading_sharding(x, mesh, axis_name, batch_size))

    return jax.tree.map(one, batch)


# ------------------------------------------------------------------------------------------- steps
def data_parallel(
    step: Callable[[Any, Any], tuple[Any, Any]],
    mesh: Mesh,
    *,
    donate_state: bool = False,
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """Jit ``step(state, batch) -> (state, metrics)`` as a data-parallel step over ``mesh``.

    The state (params, optimizer state, counters) is replicated, the batch split
    along its leading axis; the new state and the metrics come back
    replicated. Because ``step`` is traced once over the *global* batch, a
    mean loss is the mean over all devices' rows and its gradient is the
    all-reduced gradient: the result equals the one-device step up to the
    order of float reductions.

    Args:
      step: a pure, unjitted step (e.g. ``make_train_step(loss_fn, optimizer, jit=False)``).
      mesh: from ``batch_mesh``.
      donate_state: donate the input state buffers.

    Returns:
      ``jitted(state, batch) -> (state, metrics)``; pass ``shard_batch(batch, mesh)``.
    """
    rep, shard = replicated(mesh), batch_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, shard), out_shardings=(rep, rep),
                   donate_argnums=(0,) if donate_state else ())


def data_parallel_trainer(trainer: Any, mesh: Mesh, *, max_skips: int | None = None,
                          streaming: bool | None = None) -> Any:
    """The same training run with every batch it draws split over ``mesh`` and its state replicated.

    Rebuilds ``trainer`` with ``rnnjax.train.make_trainer`` on a task whose
    ``sample`` (and ``stream``) outputs carry the batch sharding; ``init`` and
    ``run`` pin the state to the replicated sharding. The model, optimizer,
    initialisation and data stream are unchanged, so the numbers equal the
    one-device run up to float reduction order. Plain ``jax.jit(trainer.run,
    static_argnums=1)`` then runs data-parallel (inputs may be uncommitted
    arrays, e.g. from ``jax.jit(trainer.init)`` or a loaded checkpoint).

    Args:
      trainer: an ``rnnjax.train.Trainer`` (e.g. from ``rnnjax.train.build``).
      mesh: from ``batch_mesh``.
      max_skips: as given to ``make_trainer`` for ``trainer`` (``RunConfig.max_skips``).
      streaming: as given to ``make_trainer``; None infers it (the state of a
        streaming trainer carries the model state across batches).

    Returns:
      A ``Trainer`` with the same fields.

    Raises:
      ValueError: ``trainer.batch_size`` not divisible by the device count.
    """
    from rnnjax.train import make_trainer

    batch_size = check_batch_size(trainer.batch_size, mesh)
    if streaming is None:
        streaming = jax.eval_shape(trainer.init, jax.random.key(0)).carry is not None
    task = shard_task(trainer.task, mesh, batch_size)
    base = make_trainer(trainer.model, task, trainer.optimizer, batch_size=batch_size, max_skips=max_skips,
                        streaming=streaming)
    if mesh.size == 1:
        return base
    rep = replicated(mesh)
    pin = lambda tree: jax.lax.with_sharding_constraint(tree, rep)  # noqa: E731

    def init(key, learning_rate=None):
        return pin(base.init(key, learning_rate))

    def step(state):
        return pin(base.step(pin(state)))

    def run(state, num_steps):
        return pin(base.run(pin(state), num_steps))

    return base._replace(init=init, step=step, run=run)


def shard_task(task: Any, mesh: Mesh, batch_size: int) -> Any:
    """``task`` whose ``sample``/``stream`` batches of ``batch_size`` rows are constrained to be split over ``mesh``."""
    sample = task.sample

    def sharded_sample(key, size):
        return constrain_batch(sample(key, size), mesh, batch_size)

    stream = task.stream
    if stream is not None:
        def sharded_stream(key, size):
            init_state, next_fn = stream(key, size)

            def sharded_next(state):
                state, batch = next_fn(state)
                return state, constrain_batch(batch, mesh, batch_size)

            return init_state, sharded_next
    else:
        sharded_stream = None
    return task._replace(sample=sharded_sample, stream=sharded_stream)


def data_parallel_run(trainer: Any, mesh: Mesh) -> Callable[[Any, int], tuple[Any, Any]]:
    """``jax.jit(trainer.run)`` with the state replicated over ``mesh`` (``num_steps`` static)."""
    rep = replicated(mesh)
    return jax.jit(trainer.run, static_argnums=1, in_shardings=(rep,), out_shardings=(rep, rep))


def data_parallel_init(trainer: Any, mesh: Mesh) -> Callable[..., Any]:
    """``jax.jit(trainer.init)`` whose state is created replicated on every device (multi-host safe)."""
    return jax.jit(trainer.init, out_shardings=replicated(mesh))


# --------------------------------------------------------------------------------------- multi-host
def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: str = "gloo",
    timeout_s: int = 300,
) -> None:
    """Join a multi-host run: ``jax.distributed.initialize`` with clear argument checks.

    Call it in every process, before any other JAX operation. Afterwards
    ``jax.devices()`` lists the devices of all processes (``batch_mesh`` spans
    them) and ``jax.process_index()`` is ``process_id``. On CPU, cross-process
    collectives go through ``cpu_collectives`` (gloo over TCP).

    Args:
      coordinator_address: ``"host:port"`` of process 0, reachable by all
        (None: ``JAX_COORDINATOR_ADDRESS`` or cluster auto-detection).
      num_processes: total number of processes.
      process_id: this process, in ``[0, num_processes)``.
      local_device_ids: restrict this process to these local accelerators.
      cpu_collectives: ``"gloo"`` or ``"mpi"`` (CPU only).
      timeout_s: how long to wait for the other processes.

    Raises:
      ValueError: ``num_processes``/``process_id`` out of range or a malformed address.
      RuntimeError: JAX was already initialised in this process.
    """
    if coordinator_address is not None and not re.fullmatch(r"\[?[^\s\]]+\]?:\d+", coordinator_address):
        raise ValueError(f"coordinator_address: expected 'host:port', got {coordinator_address!r}")
    if num_processes is not None:
        _check_count("num_processes", num_processes)
    if process_id is not None and (
        isinstance(process_id, bool) or not isinstance(process_id, int) or process_id < 0
        or (num_processes is not None and process_id >= num_processes)
    ):
        raise ValueError(f"process_id: expected an integer in [0, num_processes={num_processes}), got {process_id!r}")
    if backend_initialized():
        raise RuntimeError(
            "initialize: JAX already ran an operation in this process; call rnnjax.distributed.initialize "
            "first, before anything else touches JAX"
        )
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=timeout_s,
    )


def initialize_from_env() -> bool:
    """``initialize`` from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` if set.

    Returns:
      True if a multi-host run was joined, False if the variables are unset (single host).
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return False
    try:
        num = int(os.environ["JAX_NUM_PROCESSES"])
        pid = int(os.environ["JAX_PROCESS_ID"])
    except (KeyError, ValueError) as err:
        raise ValueError(
            "JAX_NUM_PROCESSES, JAX_PROCESS_ID: expected integers when JAX_COORDINATOR_ADDRESS is set"
        ) from err
    initialize(address, num, pid)
    return True


# --------------------------------------------------------------------------------------- run set-up
def make_mesh(
    devices: int = 1,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    batch_size: int | None = None,
    from_env: bool = True,
) -> Mesh | None:
    """Join a multi-host run if asked and build the mesh of ``devices`` devices; call before any other JAX operation.

    The three multi-host arguments go together (``initialize``); without them
    and with ``from_env``, ``initialize_from_env`` may join a run. On CPU this
    host's share of ``devices`` is requested first (``request_host_devices``).

    Args:
      devices: total devices over all processes (each process contributes the same number).
      coordinator_address, num_processes, process_id: as for ``initialize``, all or none.
      batch_size: the global batch size that must split over ``devices`` (checked
        here, so the error comes before any work), or None.
      from_env: join from ``JAX_COORDINATOR_ADDRESS`` etc. when the three arguments are None.

    Returns:
      None for one device in one process (plain one-device code needs no mesh), else ``batch_mesh(devices)``.

    Raises:
      ValueError: starting with the name of the offending argument: ``devices``
        not positive, above the available count or not a multiple of the process
        count; some but not all multi-host arguments; ``batch_size`` not a positive
        integer or not divisible by ``devices``.
    """
    _check_count("devices", devices)
    if batch_size is not None:
        _check_count("batch_size", batch_size)
    multi = (coordinator_address, num_processes, process_id)
    processes = 1
    if any(x is not None for x in multi):
        if any(x is None for x in multi):
            raise ValueError("coordinator_address, num_processes, process_id: give all three for a multi-host run, "
                             f"got {coordinator_address!r}, {num_processes!r}, {process_id!r}")
        initialize(coordinator_address, num_processes, process_id)
        processes = num_processes
    elif from_env and initialize_from_env():
        processes = int(os.environ["JAX_NUM_PROCESSES"])
    if devices == 1 and processes == 1:
        return None
    if devices % processes:
        raise ValueError(f"devices: {devices} does not split over num_processes={processes}; expected a multiple "
                         f"of {processes} (every host contributes the same number of devices)")
    request_host_devices(devices // processes)  # CPU: this host's share of the devices
    mesh = batch_mesh(devices)
    if batch_size is not None:
        check_batch_size(batch_size, mesh)
    return mesh


def _nearest_multiples(size: int, n: int) -> str:
    """The multiples of ``n`` around ``size``: ``"lower or upper"`` (just ``"upper"`` when lower is 0)."""
    lower, upper = (size // n) * n, (size // n + 1) * n
    return f"{lower} or {upper}" if lower else f"{upper}"


def _check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}: expected a positive integer, got {n!r}")
    return int(n)


__all__ = [
    "DATA_AXIS",
    "backend_initialized",
    "batch_mesh",
    "batch_sharded",
    "check_batch_size",
    "constrain_batch",
    "data_parallel",
    "data_parallel_init",
    "data_parallel_run",
    "data_parallel_trainer",
    "forced_host_device_count",
    "initialize",
    "initialize_from_env",
    "make_mesh",
    "replicate",
    "replicated",
    "request_host_devices",
    "shard_batch",
    "shard_task",
]
