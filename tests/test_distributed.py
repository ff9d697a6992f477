"""Tests of rnnjax.distributed: data parallelism equals one-device training; clear errors.

Several devices on CPU need ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
before JAX starts, so the multi-device checks run in a fresh subprocess and
send their numbers back as JSON; the comparisons happen here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnjax import distributed as dist
from rnnjax.train import make_train_step

REL = 1e-4

# one worker runs this module under -n N (tests/conftest.py): the 4-device subprocess fixture then runs once
pytestmark = pytest.mark.xdist_group("distributed")


def _run_python(code: str, *, devices: int, timeout: int = 240, extra_env=None) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env.pop("JAX_NUM_CPU_DEVICES", None)
    env.update(extra_env or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_rel_close(actual, expected, rel=REL):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    chex.assert_equal_shape([actual, expected])
    scale = np.maximum(np.abs(expected), 1e-6)
    worst = float(np.max(np.abs(actual - expected) / scale))
    assert worst <= rel, f"max relative difference {worst:.3g} > {rel}"


# The whole 4-device check in one subprocess (JAX start-up and compiles dominate the cost).
_FOUR_DEVICE_SCRIPT = """
import dataclasses, json
import jax, jax.numpy as jnp, numpy as np, optax
from rnnjax import distributed as dist
from rnnjax.train import RunConfig, build, make_train_step

out = {"devices": jax.device_count()}
cfg = RunConfig(task="adding", cell="lstm", hidden=8, seq_len=8, batch_size=8, steps=6, lr=1e-2, clip=1.0,
                max_skips=20, task_options=(("eval_size", 64),))
trainer = build(cfg)

# one device: the plain jitted run, no mesh at all
state = jax.jit(trainer.init)(jax.random.key(0))
s1, m1 = jax.jit(trainer.run, static_argnums=1)(state, cfg.steps)
out["one"] = {"loss": np.asarray(m1["loss"]).tolist(), "eval": float(jax.jit(trainer.evaluate)(s1.params)["loss"]),
              "params": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(s1.params)]}

# four devices: batch split, params replicated
mesh = dist.batch_mesh(4)
tr4 = dist.data_parallel_trainer(trainer, mesh, max_skips=cfg.max_skips)
st4 = dist.data_parallel_init(tr4, mesh)(jax.random.key(0))
run4 = dist.data_parallel_run(tr4, mesh)
hlo = run4.lower(st4, cfg.steps).compile().as_text()
s4, m4 = run4(st4, cfg.steps)
leaf = jax.tree.leaves(s4.params)[0]
out["four"] = {"loss": np.asarray(m4["loss"]).tolist(), "eval": float(jax.jit(tr4.evaluate)(s4.params)["loss"]),
               "params": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(s4.params)],
               "all_reduce": "all-reduce" in hlo, "param_devices": len(leaf.sharding.device_set),
               "param_replicated": bool(leaf.sharding.is_fully_replicated)}

# generic step: any loss_fn and optax optimizer, a batch placed by shard_batch
def loss_fn(w, batch):
    x, y = batch
    return jnp.mean((jnp.tanh(x @ w) - y) ** 2)

opt = optax.adam(0.1)
step = make_train_step(loss_fn, opt, jit=False)
w0 = jax.random.normal(jax.random.key(1), (3, 2))
from rnnjax.train import TrainState
z = jnp.zeros((), jnp.int32)
st = TrainState(w0, opt.init(w0), z, jax.random.key(2), z, z)
batch = (jax.random.normal(jax.random.key(3), (12, 3)), jax.random.normal(jax.random.key(4), (12, 2)))
ref_state, _ = jax.jit(step)(st, batch)
dp = dist.data_parallel(step, mesh)
sharded = dist.shard_batch(batch, mesh)
out["shard_rows"] = [int(s.data.shape[0]) for s in sharded[0].addressable_shards]
new_state, metrics = dp(dist.replicate(st, mesh), sharded)
out["generic"] = {"ref": np.asarray(ref_state.params).ravel().tolist(),
                  "dp": np.asarray(new_state.params).ravel().tolist()}

# rnnjax.unroll inside jax.shard_map (type-checked varying axes): each device unrolls its share of the
# batch; the loss is averaged over devices (pmean), whose transpose sums the gradients of the replicated
# params; equal to the one-device gradient of the whole batch
import rnnjax
from jax.sharding import PartitionSpec as P
out["shard_map"] = {}
xs_sm = jax.random.normal(jax.random.key(5), (8, 5, 3))
for cell_name in ("lstm", "gru", "mingru"):
    cell = rnnjax.make_cell(cell_name, 3, 6)
    p_sm = cell.init(jax.random.key(6))

    def sm_loss(p, x, cell=cell):
        return jnp.mean(jax.vmap(lambda s: rnnjax.unroll(cell, p, s)[1])(x) ** 2)

    def local(p, x, sm_loss=sm_loss):
        return jax.value_and_grad(lambda q: jax.lax.pmean(sm_loss(q, x), "batch"))(p)

    sharded_vg = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("batch")), out_specs=(P(), P())))
    got = sharded_vg(p_sm, xs_sm)
    want = jax.jit(jax.value_and_grad(sm_loss))(p_sm, xs_sm)
    out["shard_map"][cell_name] = [[np.asarray(a).ravel().tolist() for a in jax.tree.leaves(t)] for t in (got, want)]

# the command line: rnnjax train --devices 4 (and its errors)
import contextlib, io, os, tempfile
from rnnjax.cli import main
tmp = tempfile.mkdtemp()
flags = ["train", "--task", "adding", "--cell", "lstm", "--hidden", "8", "--seq-len", "8", "--batch-size", "8",
         "--steps", "6", "--lr", "0.01", "--clip", "1.0", "--task-option", "eval_size=64"]
rc = main(flags + ["--devices", "4", "--out", os.path.join(tmp, "d4")])
with open(os.path.join(tmp, "d4", "summary.json")) as f:
    summary = json.load(f)
with open(os.path.join(tmp, "d4", "metrics.jsonl")) as f:
    cli_losses = [json.loads(line)["loss"] for line in f]
cli_errors = {}
for name, extra in {"too_many": ["--devices", "5"], "indivisible": ["--devices", "4", "--batch-size", "6"]}.items():
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        code = main(flags + extra + ["--out", os.path.join(tmp, name)])
    cli_errors[name] = [code, buf.getvalue(), os.path.exists(os.path.join(tmp, name))]
out["cli"] = {"rc": rc, "eval": summary["eval"]["loss"], "loss": cli_losses, "errors": cli_errors}

# clear errors
errors = {}
for name, fn in {"too_many": lambda: dist.batch_mesh(5),
                 "indivisible": lambda: dist.data_parallel_trainer(build(dataclasses.replace(cfg, batch_size=6)), mesh),
                 "shard_batch": lambda: dist.shard_batch(jnp.zeros((6, 2)), mesh),
                 "make_mesh": lambda: dist.make_mesh(4, batch_size=6)}.items():
    try:
        fn()
        errors[name] = None
    except ValueError as err:
        errors[name] = str(err)
out["errors"] = errors
out["make_mesh"] = dict(dist.make_mesh(4, batch_size=8).shape)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    # the session's persistent compilation cache (conftest) reaches the subprocess: `rnnjax train --devices 4`
    # compiles the same init/run/evaluate programs as the library's 4-device run above it, and loads them instead
    return _run_python(_FOUR_DEVICE_SCRIPT, devices=4)


def test_four_devices_equal_one_device_on_adding(four_devices):
    one, four = four_devices["one"], four_devices["four"]
    assert four_devices["devices"] == 4
    _assert_rel_close(four["loss"], one["loss"])
    _assert_rel_close(four["eval"], one["eval"])
    for a, b in zip(four["params"], one["params"]):
        np.testing.assert_allclose(a, b, rtol=REL, atol=REL * max(1e-6, float(np.max(np.abs(b)))))
    # it really ran data-parallel: a gradient all-reduce, params replicated on all 4 devices
    assert four["all_reduce"]
    assert four["param_devices"] == 4 and four["param_replicated"]


def test_generic_data_parallel_step_equals_plain_step(four_devices):
    assert four_devices["shard_rows"] == [3, 3, 3, 3]
    _assert_rel_close(four_devices["generic"]["dp"], four_devices["generic"]["ref"])


@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru"])
def test_unroll_inside_shard_map_equals_one_device(four_devices, cell):
    got, want = four_devices["shard_map"][cell]
    for a, b in zip(got, want):
        _assert_rel_close(a, b, rel=1e-5)


def test_cli_train_devices_4_equals_one_device(four_devices):
    cli, one = four_devices["cli"], four_devices["one"]
    assert cli["rc"] == 0
    _assert_rel_close(cli["loss"], one["loss"])
    _assert_rel_close(cli["eval"], one["eval"])
    code, err, created = cli["errors"]["too_many"]
    assert code == 2 and "--devices: requested 5 devices but only 4 cpu devices are available" in err
    assert len(err.strip().splitlines()) == 1 and not created
    code, err, created = cli["errors"]["indivisible"]
    assert code == 2 and "--batch-size: 6 is not divisible by --devices 4;" in err and "use --batch-size 4 or 8," in err
    assert not created


def test_clear_errors_with_four_devices(four_devices):
    errors = four_devices["errors"]
    assert "devices: requested 5 devices but only 4 cpu devices are available" in errors["too_many"]
    assert "batch_size: 6 is not divisible by devices=4" in errors["indivisible"]
    assert "use batch_size 4 or 8" in errors["indivisible"]
    assert "batch_size: 6 is not divisible by devices=4" in errors["shard_batch"]
    assert "batch_size: 6 is not divisible by devices=4" in errors["make_mesh"]
    assert four_devices["make_mesh"] == {"batch": 4}


# ------------------------------------------------------------------------------ in this process (1+ devices)
def test_batch_mesh_rejects_more_devices_than_available():
    n = jax.device_count()
    with pytest.raises(ValueError, match=rf"devices: requested {n + 1} devices but only {n} "):
        dist.batch_mesh(n + 1)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="devices: expected"):
            dist.batch_mesh(bad)


def test_check_batch_size_messages():
    mesh = dist.batch_mesh(1)
    assert dist.check_batch_size(7, mesh) == 7
    for bad in (0, -4, 2.0, True):
        with pytest.raises(ValueError, match="batch_size: expected a positive integer"):
            dist.check_batch_size(bad, mesh)


def test_single_device_data_parallel_matches_python_loop():
    """On a 1-device mesh the step equals a hand-written Adam loop (independent truth)."""
    mesh = dist.batch_mesh(1)
    x = jax.random.normal(jax.random.key(0), (8, 3), jnp.float64)
    y = jax.random.normal(jax.random.key(1), (8,), jnp.float64)
    w = jnp.zeros((3,), jnp.float64)

    def loss_fn(w, batch):
        return jnp.mean((batch[0] @ w - batch[1]) ** 2)

    from rnnjax.train import TrainState

    opt = optax.sgd(0.1)
    z = jnp.zeros((), jnp.int32)
    state = TrainState(w, opt.init(w), z, jax.random.key(0), z, z)
    step = dist.data_parallel(make_train_step(loss_fn, opt, jit=False), mesh)
    w_ref = np.zeros(3)
    xn, yn = np.asarray(x), np.asarray(y)
    for _ in range(3):
        state, metrics = step(state, dist.shard_batch((x, y), mesh))
        grad = 2.0 / 8 * xn.T @ (xn @ w_ref - yn)
        w_ref = w_ref - 0.1 * grad
    chex.assert_trees_all_close(np.asarray(state.params), w_ref, rtol=1e-12)
    assert bool(metrics["applied"])


def test_shard_batch_rejects_mixed_leading_sizes():
    mesh = dist.batch_mesh(1)
    with pytest.raises(ValueError, match="batch: expected one leading batch size"):
        dist.shard_batch((jnp.zeros((4, 2)), jnp.zeros((5,))), mesh)


def test_initialize_argument_errors():
    with pytest.raises(ValueError, match="coordinator_address: expected 'host:port'"):
        dist.initialize("no-port", 2, 0)
    with pytest.raises(ValueError, match=r"process_id: expected an integer in \[0, num_processes=2\)"):
        dist.initialize("localhost:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes: expected a positive integer"):
        dist.initialize("localhost:1234", 0, 0)


def test_request_host_devices_after_start_changes_nothing():
    jax.devices()  # the backend is initialised in the test process
    assert dist.backend_initialized()
    assert dist.request_host_devices(2) is False
    with pytest.raises(ValueError, match="devices: expected a positive integer"):
        dist.request_host_devices(0)


def test_make_mesh_takes_plain_values_and_names_the_argument():
    n = jax.device_count()
    assert dist.make_mesh(1) is None and dist.make_mesh(1, batch_size=7) is None  # one device: no mesh needed
    for kwargs, message in [({"devices": 0}, "devices: expected a positive integer, got 0"),
                            ({"devices": n + 1}, rf"devices: requested {n + 1} devices but only {n} "),
                            ({"devices": 1, "batch_size": 0}, "batch_size: expected a positive integer, got 0"),
                            ({"devices": 2, "num_processes": 2},
                             "coordinator_address, num_processes, process_id: give all three for a multi-host run"),
                            ({"devices": 2, "coordinator_address": "no-port", "num_processes": 2, "process_id": 0},
                             "coordinator_address: expected 'host:port'")]:
        with pytest.raises(ValueError, match=message):
            dist.make_mesh(**kwargs)
    assert not hasattr(dist, "mesh_from_args") and not hasattr(dist, "add_device_arguments")  # the CLI's adapters


def test_cli_device_flags_reword_library_errors_with_the_flag():
    import argparse

    from rnnjax.cli import CLIError
    from rnnjax.cli._devices import add_device_arguments, flag_message, mesh_from_args

    parser = argparse.ArgumentParser()
    add_device_arguments(parser)
    assert mesh_from_args(parser.parse_args([]), batch_size=6) is None
    n = jax.device_count()
    for argv, message in [(["--devices", "0"], "--devices: expected a positive integer, got 0"),
                          (["--devices", str(n + 1)], rf"--devices: requested {n + 1} devices but only {n} "),
                          (["--devices", "2", "--num-processes", "2"],
                           "--coordinator, --num-processes, --process-id: give all three for a multi-host run"),
                          (["--devices", "2", "--coordinator", "no-port", "--num-processes", "2", "--process-id", "0"],
                           "--coordinator: expected 'host:port'"),
                          (["--devices", "2", "--coordinator", "localhost:1", "--num-processes", "2", "--process-id",
                            "2"], r"--process-id: expected an integer in \[0, --num-processes 2\), got 2")]:
        with pytest.raises(CLIError, match=message):
            mesh_from_args(parser.parse_args(argv))
    flags = {"batch_size": "--batch", "devices": "--devices"}
    assert flag_message("batch_size: 6 is not divisible by devices=4 (use batch_size 4 or 8)", flags) == (
        "--batch: 6 is not divisible by --devices 4 (use --batch 4 or 8)")
    assert flag_message("devices: requested 5 devices", flags) == "--devices: requested 5 devices"
    assert flag_message("JAX_PROCESS_ID: expected an integer", flags) == "JAX_PROCESS_ID: expected an integer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


_HOST_SCRIPT = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
from rnnjax import distributed as dist
dist.initialize("localhost:{port}", 2, {pid}, timeout_s=120)
import numpy as np
from rnnjax.train import RunConfig, build
cfg = RunConfig(task="adding", cell="lstm", hidden=8, seq_len=8, batch_size=8, steps=4, lr=1e-2, clip=1.0,
                max_skips=20, task_options=(("eval_size", 64),))
trainer = build(cfg)
mesh = dist.batch_mesh()
tr = dist.data_parallel_trainer(trainer, mesh, max_skips=20)
s, m = dist.data_parallel_run(tr, mesh)(dist.data_parallel_init(tr, mesh)(jax.random.key(0)), cfg.steps)
print(json.dumps({{"global": jax.device_count(), "local": jax.local_device_count(),
                  "loss": np.asarray(m["loss"]).tolist()}}))
"""


@pytest.mark.skipif(os.environ.get("RNNJAX_MULTIHOST_TEST") != "1",
                    reason="two-process run (~15-60 s on 2 cores); set RNNJAX_MULTIHOST_TEST=1")
def test_two_processes_equal_one_device():
    """Two 'hosts' on localhost (2 CPU devices each, gloo collectives) give the one-device numbers."""
    port = _free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOST_SCRIPT.format(port=port, pid=pid))],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    ref = _run_python("""
        import json, jax, numpy as np
        from rnnjax.train import RunConfig, build
        cfg = RunConfig(task="adding", cell="lstm", hidden=8, seq_len=8, batch_size=8, steps=4, lr=1e-2, clip=1.0,
                        max_skips=20, task_options=(("eval_size", 64),))
        t = build(cfg)
        s, m = jax.jit(t.run, static_argnums=1)(jax.jit(t.init)(jax.random.key(0)), cfg.steps)
        print(json.dumps({"loss": np.asarray(m["loss"]).tolist()}))
    """, devices=1)
    for out in outs:
        assert out["global"] == 4 and out["local"] == 2
        _assert_rel_close(out["loss"], ref["loss"])


@pytest.mark.skipif(os.environ.get("RNNJAX_MULTIHOST_TEST") != "1",
                    reason="two `rnnjax train` processes (~30-90 s on 2 cores); set RNNJAX_MULTIHOST_TEST=1")
def test_two_process_cli_writes_once(tmp_path):
    """`rnnjax train --coordinator ...` in two processes sharing --out: process 0 alone writes, numbers = 1 device."""
    port = _free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_NUM_CPU_DEVICES"] = "2"
    flags = ["train", "--task", "adding", "--cell", "lstm", "--hidden", "8", "--seq-len", "8", "--batch-size", "8",
             "--steps", "6", "--lr", "0.01", "--clip", "1.0", "--task-option", "eval_size=64"]
    run = [sys.executable, "-c", "import sys; from rnnjax.cli import main; sys.exit(main(sys.argv[1:]))"]
    procs = [subprocess.Popen(run + flags + ["--devices", "4", "--coordinator", f"localhost:{port}",
                                             "--num-processes", "2", "--process-id", str(pid),
                                             "--out", str(tmp_path / "dp")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
    one = subprocess.run(run + flags + ["--out", str(tmp_path / "one")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]

    def lines(run_dir, name):
        with open(tmp_path / run_dir / name) as f:
            return [json.loads(line) for line in f]

    dp, ref = lines("dp", "metrics.jsonl"), lines("one", "metrics.jsonl")
    assert [r["step"] for r in dp] == [r["step"] for r in ref] == list(range(1, 7))  # each step logged once
    _assert_rel_close([r["loss"] for r in dp], [r["loss"] for r in ref])
    assert len(lines("dp", "eval.jsonl")) == 1
    with open(tmp_path / "dp" / "summary.json") as f:
        summary = json.load(f)
    _assert_rel_close(summary["eval"]["loss"], lines("one", "eval.jsonl")[0]["loss"])
