"""Tests of rnnjax.sweep and ``rnnjax sweep``: every row is bit for bit the separate ``rnnjax train`` run."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

import rnnjax
from rnnjax import sweep
from rnnjax.cli import main
from rnnjax.train import RunConfig, build, run_key

REL = 1e-4
TINY = ["--task", "adding", "--cell", "elman-tanh", "--hidden", "8", "--seq-len", "8", "--batch-size", "8",
        "--steps", "15", "--task-option", "eval_size=64"]


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.fixture(scope="module")
def cli_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    rc = main(["sweep", *TINY, "--init-gain", "0.5,1.5", "--lr", "1e-2,3e-3", "--seeds", "0,1", "--out", str(out)])
    assert rc == 0
    with open(out / "sweep.json") as f:
        return out, json.load(f)


def test_sweep_json_and_png(cli_sweep):
    out, report = cli_sweep
    rows = report["runs"]
    assert len(rows) == 8
    grid = {(r["init_gain"], r["lr"], r["seed"]) for r in rows}
    assert grid == {(g, lr, s) for g in (0.5, 1.5) for lr in (1e-2, 3e-3) for s in (0, 1)}
    for r in rows:
        assert np.isfinite(r["eval_loss"]) and r["skipped_steps"] == 0 and r["steps"] == 15
        assert r["baseline_loss"] == pytest.approx(1 / 6)
    # different seeds / gains / lrs really are different runs
    assert len({round(r["eval_loss"], 7) for r in rows}) == 8
    with open(out / "sweep.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("pick", [(1.5, 1e-2, 1), (0.5, 3e-3, 0)])
def test_rows_equal_separate_train_runs(cli_sweep, tmp_path, pick):
    """Two rows that differ in gain, lr and seed: the row's ``command`` (rnnjax train) gives the same bits."""
    _, report = cli_sweep
    row = next(r for r in report["runs"] if (r["init_gain"], r["lr"], r["seed"]) == pick)
    argv = shlex.split(row["command"])[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "run")
    assert main(argv) == 0
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        last = [json.loads(line) for line in f][-1]
    assert summary["init_gain"] == pick[0] and summary["lr"] == pick[1] and summary["seed"] == pick[2]
    assert row["eval_loss"] == summary["eval"]["loss"]  # scored on the same evaluation set (eval_seed 0)
    assert row["final_train_loss"] == last["loss"]
    assert row["skipped_steps"] == summary["skipped_steps"] and row["eval_seed"] == summary["eval_seed"] == 0


# adding task with T=50 > 32 (XLA:CPU splits such reductions), gain 1.5, lr 1e-2: long enough for training to
# amplify any last-bit difference between the sweep's program and the single run's (vmapped rows of this sweep
# differed from the separate runs by 5e-3 in the evaluation loss after 300 steps).
DRIFT = ["--task", "adding", "--cell", "elman-tanh", "--hidden", "16", "--seq-len", "50", "--batch-size", "16",
         "--steps", "300", "--lr", "1e-2", "--init-gain", "1.5", "--task-option", "eval_size=64"]


def test_rows_are_bitwise_the_separate_runs_where_drift_used_to_show(tmp_path):
    """The default sweep of a run long enough to amplify rounding: every row is bit for bit its command."""
    out = tmp_path / "sweep"
    assert main(["sweep", *DRIFT, "--seeds", "0,1", "--out", str(out)]) == 0
    with open(out / "sweep.json") as f:
        report = json.load(f)
    assert report["method"] == "map" and len(report["runs"]) == 2
    for i, row in enumerate(report["runs"]):
        argv = shlex.split(row["command"])[1:]
        argv[argv.index("--out") + 1] = str(tmp_path / f"run{i}")
        assert main(argv) == 0
        with open(tmp_path / f"run{i}" / "summary.json") as f:
            summary = json.load(f)
        with open(tmp_path / f"run{i}" / "metrics.jsonl") as f:
            last = [json.loads(line) for line in f][-1]
        assert summary["seed"] == row["seed"] and summary["steps"] == row["steps"] == 300
        assert row["eval_loss"] == summary["eval"]["loss"]
        assert row["final_train_loss"] == last["loss"]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="bitwise batch invariance is arranged for XLA:CPU")
def test_vectorised_rows_are_bitwise_batch_invariant_single_runs():
    """``method="vmap"``: each row equals the run built with ``batch_invariant=True`` and compiled with
    ``compiler_options()`` (what the vectorised sweep opts into), and the plain run to float rounding."""
    from rnnjax.train import compiler_options

    base = RunConfig(task="adding", cell="elman-tanh", hidden=16, seq_len=50, batch_size=16, steps=60, lr=1e-2,
                     init_gain=1.5, task_options=(("eval_size", 64),))
    configs = sweep.grid(base, seeds=(0, 1))
    result = sweep.run_sweep(configs, method="vmap")
    for i, config in enumerate(configs):
        trainer = build(config, batch_invariant=True)
        run = jax.jit(trainer.run, static_argnums=1, compiler_options=compiler_options())
        state, _ = run(jax.jit(trainer.init)(run_key(config.seed), config.lr), config.steps)
        chex.assert_trees_all_equal(jax.tree.map(lambda x: x[i], result.states.params), state.params)
        plain = build(config)
        alone, _ = jax.jit(plain.run, static_argnums=1)(jax.jit(plain.init)(run_key(config.seed), config.lr),
                                                        config.steps)
        chex.assert_trees_all_close(state.params, alone.params, rtol=1e-4, atol=1e-6)


def test_diverging_run_halts_inside_the_sweep_like_alone():
    """A run that blows up is skipped/halted by the guard without touching its neighbours."""
    base = RunConfig(task="adding", cell="irnn", hidden=4, seq_len=6, batch_size=4, steps=8, clip=0.0, max_skips=2,
                     optimizer="sgd",
                     task_options=(("eval_size", 16),))
    configs = sweep.grid(base, lrs=(1e-2, 1e100), seeds=(3,))  # 1e100 overflows float64 parameters too
    result = sweep.run_sweep(configs, method="vmap")
    calm, wild = result.rows
    assert calm["status"] == "completed" and calm["skipped_steps"] == 0 and calm["steps"] == 8
    assert wild["steps"] < 8  # halted: later steps were no-ops
    assert wild["status"] == "stopped_non_finite" and wild["skipped_steps"] >= 2
    # independent truth: the diverging run alone, unvmapped (the calm one is covered by the CLI tests)
    trainer = build(configs[1])
    state, _ = jax.jit(trainer.run, static_argnums=1)(jax.jit(trainer.init)(run_key(3)), configs[1].steps)
    assert int(state.skipped) == wild["skipped_steps"] and int(state.step) == wild["steps"]
    mine = jax.tree.map(lambda x: x[1], result.states.params)
    chex.assert_trees_all_close(mine, state.params, rtol=REL, atol=1e-6)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(mine))
    # the default method="map": the same runs one after another inside one program -- bit for bit the single run
    exact = sweep.run_sweep(configs)
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[1], exact.states.params), state.params)
    assert [r["status"] for r in exact.rows] == [calm["status"], wild["status"]]


def _bits(tree):
    """``tree`` with its PRNG keys as their raw data, so that every leaf compares bit for bit."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                        else x, tree)


def test_one_init_program_bitwise_the_single_run_inits_of_every_cell(compiled_programs):
    """The initial states of a sweep come from ONE compiled program, each bit for bit the state ``rnnjax train``
    starts from (``jax.jit(build(config).init)(run_key(seed))``), for every registered cell: here one sweep_init
    for all the cells (a variant each, gain 1.7 or 0.5, two seeds, a learning rate of its own)."""
    configs, members = [], []
    for k, name in enumerate(sorted(rnnjax.CELLS)):
        base = RunConfig(task="adding", cell=name, hidden=5, seq_len=4, batch_size=2, steps=1, lr=3e-4 * (k + 1),
                         init_gain=(1.7, 0.5)[k % 2], task_options=(("eval_size", 4),))
        members.append([len(configs), len(configs) + 1])
        configs += [dataclasses.replace(base, seed=3).validate(), base.validate()]
    trainers = [build(sweep.variant_key(configs[idx[0]])) for idx in members]
    states, names = compiled_programs(lambda: sweep._initial_states(configs, members, trainers))
    assert names.count("jit(sweep_init)") == 1 and not [n for n in names if "init" in n and n != "jit(sweep_init)"]
    for v, idx in enumerate(members):
        init = jax.jit(build(configs[idx[0]]).init)  # what `rnnjax train` runs (the seed is not part of the trainer)
        for j, i in enumerate(idx):
            chex.assert_trees_all_equal(_bits(jax.tree.map(lambda x: x[j], states[v])),
                                        _bits(init(run_key(configs[i].seed))))


def test_sweep_compiles_one_init_program(compiled_programs):
    """``run_sweep`` of two gains x two lrs x two seeds (scrambled): one init compilation, initial params bitwise."""
    base = RunConfig(task="adding", cell="gru", hidden=5, seq_len=4, batch_size=2, steps=1,
                     task_options=(("eval_size", 4),))
    # gain 1.0 inits with the variant's own trainer; the runs of a gain are not adjacent
    configs = sweep.grid(base, init_gains=(1.0, 1.5), seeds=(0, 1), lrs=(1e-2, 3e-3))[::-1]
    configs = configs[::2] + configs[1::2]
    result, names = compiled_programs(lambda: sweep.run_sweep(configs))
    assert names.count("jit(sweep_init)") == 1 and "jit(init)" not in names
    inits = {}  # what `rnnjax train` runs, one per (gain, lr): the seed is not part of the trainer
    for i, config in enumerate(configs):
        if (config.init_gain, config.lr) not in inits:
            inits[config.init_gain, config.lr] = jax.jit(build(config).init)
        init = inits[config.init_gain, config.lr]
        chex.assert_trees_all_equal(jax.tree.map(lambda x: x[i], result.initial_params),
                                    init(run_key(config.seed)).params)


def test_grid_order_and_errors():
    base = RunConfig(task="adding", cell="gru")
    configs = sweep.grid(base, init_gains=(0.5, 1.0), seeds=(0, 1, 2))
    assert [(c.init_gain, c.seed) for c in configs] == [(g, s) for g in (0.5, 1.0) for s in (0, 1, 2)]
    assert all(c.lr == base.lr and c.cell == "gru" for c in configs)
    with pytest.raises(ValueError, match="init_gains: expected positive numbers"):
        sweep.grid(base, init_gains=(0.5, -1.0))
    with pytest.raises(ValueError, match="seeds: duplicate values"):
        sweep.grid(base, seeds=(1, 1))
    with pytest.raises(ValueError, match="lrs: expected at least one value"):
        sweep.grid(base, lrs=())
    with pytest.raises(ValueError, match=r"must share the shapes .* these differ in \['hidden'\]"):
        sweep.run_sweep([base, dataclasses.replace(base, hidden=3)])
    with pytest.raises(ValueError, match="configs: expected at least one"):
        sweep.run_sweep([])
    with pytest.raises(ValueError, match="method: expected one of"):
        sweep.run_sweep(configs, method="pmap")


def test_cli_errors(tmp_path, capsys):
    jax.devices()  # backend started: the device count is fixed
    n = jax.device_count()
    cases = [
        (["--init-gain", "0.5,x"], "--init-gain: expected comma-separated numbers"),
        (["--seeds", "0,0"], "--seeds: duplicate values"),
        (["--devices", str(n + 1)], f"--devices: requested {n + 1} devices but only {n} "),
        (["--devices", "0"], "--devices: expected a positive integer"),
        (["--hidden", "0"], "--hidden: expected an integer >= 1"),
    ]
    for extra, message in cases:
        rc = main(["sweep", *TINY, *extra, "--out", str(tmp_path / "new")])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "sweep.json").write_text("{}")
    assert main(["sweep", *TINY, "--out", str(tmp_path / "full")]) == 2
    assert "is not a new or empty directory" in capsys.readouterr().err
    assert (tmp_path / "full" / "sweep.json").read_text() == "{}"


def test_run_axis_sharded_over_three_devices_equals_unsharded(cli_sweep, tmp_path):
    """``rnnjax sweep --devices 3`` (8 runs padded to 9, each device maps over its 3) gives the same rows."""
    _, report = cli_sweep
    out = tmp_path / "sharded"
    argv = ["sweep", *TINY, "--init-gain", "0.5,1.5", "--lr", "1e-2,3e-3", "--seeds", "0,1", "--devices", "3",
            "--out", str(out)]
    code = f"import sys; from rnnjax.cli import main; sys.exit(main({argv!r}))"
    # same numeric mode as this test process (conftest enables x64)
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=3",
               JAX_ENABLE_X64="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "sweep.json") as f:
        sharded = json.load(f)
    assert sharded["devices"] == 3 and sharded["method"] == "map" and len(sharded["runs"]) == 8
    for mine, ref in zip(sharded["runs"], report["runs"]):
        assert (mine["init_gain"], mine["lr"], mine["seed"]) == (ref["init_gain"], ref["lr"], ref["seed"])
        assert _rel(mine["eval_loss"], ref["eval_loss"]) <= REL
        assert _rel(mine["final_train_loss"], ref["final_train_loss"]) <= REL
