"""Training with dynamics: the flip-flop task, gradient flossing in the step, lyapunov.jsonl, ``rnnjax dynamics``."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import checkpoint as ckpt
from rnnjax import dynamics, gradflow
from rnnjax.cli import main
from rnnjax.rundir import read_jsonl
from rnnjax.tasks import get_task
from rnnjax.tasks._flipflop import flipflop_baseline
from rnnjax.train import RunConfig, build, run_key

TINY = ["--task", "flipflop", "--cell", "elman-tanh", "--hidden", "6", "--seq-len", "12", "--batch-size", "4",
        "--lr", "1e-2", "--seed", "3", "--task-option", "eval_size=16"]


# ------------------------------------------------------------------------------------------- flip-flop
def test_flipflop_targets_hold_the_last_pulse_and_the_baseline_is_exact():
    task = get_task("flipflop", seq_len=40, pulse_prob=0.2)
    assert (task.pattern, task.loss, task.input_size, task.output_size) == ("many_to_many", "mse", 3, 3)
    batch = task.sample(jax.random.key(0), 8)
    x, y = np.asarray(batch.inputs), np.asarray(batch.targets)
    assert x.shape == y.shape == (8, 40, 3) and set(np.unique(x)) <= {-1.0, 0.0, 1.0}
    want = np.zeros_like(y)
    for b in range(8):  # a Python loop: hold the sign of the last pulse per channel
        for j in range(3):
            held = 0.0
            for t in range(40):
                if x[b, t, j] != 0:
                    held = x[b, t, j]
                want[b, t, j] = held
    np.testing.assert_array_equal(y, want)
    # the baseline: mean over t of P(a pulse at a step <= t), summed term by term, and by Monte Carlo
    p, T = 0.2, 40
    assert task.baseline_loss == pytest.approx(np.mean([1 - (1 - p) ** (t + 1) for t in range(T)]), rel=1e-12)
    assert flipflop_baseline(1, 0.3) == pytest.approx(0.3)
    big = task.sample(jax.random.key(1), 4000)
    mc = np.asarray(big.targets) ** 2  # predicting 0: squared error = y^2
    se = mc.mean(axis=(1, 2)).std() / np.sqrt(4000)
    assert abs(mc.mean() - task.baseline_loss) < 4 * se
    assert abs(float(np.mean(np.asarray(big.inputs) != 0)) - p) < 0.01
    with pytest.raises(ValueError, match="pulse_prob"):
        get_task("flipflop", pulse_prob=1.5)
    with pytest.raises(ValueError, match="n_bits"):
        get_task("flipflop", n_bits=0)


# --------------------------------------------------------------------------------------------- flossing
def test_the_flossing_gradient_joins_the_task_gradient_in_one_step():
    config = RunConfig(task="flipflop", cell="elman-tanh", hidden=5, seq_len=10, batch_size=3, lr=1e-2, clip=0.0,
                       floss_k=2, floss_weight=0.5, floss_every=2, floss_pretrain=1,
                       task_options=(("eval_size", 8),))
    trainer = build(config)
    state = jax.jit(trainer.init)(run_key(0))
    step = jax.jit(trainer.step)
    model, task, opt = trainer.model, trainer.task, trainer.optimizer

    def floss(params, batch):
        per = jax.vmap(lambda x: dynamics.flossing_loss(model.cell, params.cell, x, 2, transient=1))(batch.inputs)
        return jnp.mean(per)

    @jax.jit
    def reference(params, opt_state, batch, task_on, floss_on):  # the objective written out by hand
        def objective(p):
            return task_on * model.loss(p, batch)[0] + floss_on * 0.5 * floss(p, batch)

        value, grads = jax.value_and_grad(objective)(params)
        updates, _ = opt.update(grads, opt_state, params)
        return value, jax.tree.map(lambda a, u: a + u, params, updates), floss(params, batch)

    for s in range(4):  # s = 0: pretraining (flossing alone); 1: task only; 2: task + flossing; 3: task only
        batch = task.sample(jax.random.fold_in(state.data_key, s), 3)
        value, want, floss_value = reference(state.params, state.opt_state, batch, float(s >= 1),
                                             float(s == 0 or s % 2 == 0))
        new, m = step(state)
        assert float(m["loss"]) == pytest.approx(float(value), rel=1e-5)
        if s in (0, 2):
            assert float(m["floss"]) == pytest.approx(float(floss_value), rel=1e-5)
        else:
            assert np.isnan(float(m["floss"]))
        for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
        state = new


def test_floss_and_lyapunov_settings_are_checked_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(ValueError, match="floss_every"):
        RunConfig(floss_k=1, floss_every=0).validate()
    with pytest.raises(ValueError, match="floss_weight"):
        RunConfig(floss_weight=-1.0).validate()
    with pytest.raises(ValueError, match="lyapunov_k"):
        RunConfig(lyapunov_k=0).validate()
    with pytest.raises(ValueError, match="floss_k: expected an integer in \\[1, 6\\]"):
        build(RunConfig(task="flipflop", cell="gru", hidden=6, floss_k=7))
    for extra, message in ((["--floss-k", "1", "--bidirectional"], "--floss-k: needs a many_to_one"),
                           (["--lyapunov-every", "2", "--lyapunov-k", "9"], "--lyapunov-k: expected an integer"),
                           (["--floss-k", "2", "--floss-every", "0"], "--floss-every")):
        out = str(tmp_path / "x")
        capsys.readouterr()
        assert main(["train", *TINY, "--steps", "2", *extra, "--out", out]) == 2
        assert message in capsys.readouterr().err
        assert not os.path.exists(out) or os.listdir(out) == []


# ------------------------------------------------------------------------- lyapunov.jsonl, exact resume
@pytest.fixture(scope="module")
def lyap_run(tmp_path_factory):
    """A finished 8-step run with flossing and the Lyapunov spectrum every 4 steps."""
    out = str(tmp_path_factory.mktemp("dyn") / "run")
    argv = ["train", *TINY, "--steps", "8", "--lyapunov-every", "4", "--lyapunov-k", "2", "--floss-k", "1",
            "--floss-every", "2", "--floss-pretrain", "2", "--tensorboard", "--out", out]
    assert main(argv) == 0
    return out, argv


def test_lyapunov_jsonl_matches_lyapunov_spectrum_and_the_figure_is_written(lyap_run):
    out, _ = lyap_run
    rows = read_jsonl(os.path.join(out, "lyapunov.jsonl"))
    assert [r["step"] for r in rows] == [0, 4, 8] and all(len(r["exponents"]) == 2 for r in rows)
    assert os.path.getsize(os.path.join(out, "lyapunov.png")) > 1000
    config = RunConfig.from_json(json.load(open(os.path.join(out, "config.json"))))
    trainer = build(config)
    state, _ = ckpt.load(os.path.join(out, "checkpoint.msgpack"), jax.jit(trainer.init)(run_key(config.seed)))
    xs = trainer.task.eval_batch().inputs[:8]
    want = np.mean([gradflow.lyapunov_spectrum(trainer.model.cell, state.params.cell, x, k=2, transient=1)
                    for x in xs], axis=0)
    np.testing.assert_allclose(rows[-1]["exponents"], want, rtol=1e-5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(out, "tensorboard"), size_guidance={"scalars": 0}).Reload()
    for i in range(2):
        events = acc.Scalars(f"train/lyapunov_{i + 1}")
        assert [e.step for e in events] == [0, 4, 8]
        np.testing.assert_allclose([e.value for e in events], [r["exponents"][i] for r in rows], rtol=1e-6)
    metrics = read_jsonl(os.path.join(out, "metrics.jsonl"))
    # steps 0, 1 (pretraining) and every 2nd after floss: rows s = step index + 1
    assert [m["step"] for m in metrics if m["floss"] is not None] == [1, 2, 3, 5, 7]


def test_a_resumed_flossing_run_equals_the_uninterrupted_one(lyap_run, tmp_path):
    out, argv = lyap_run
    half = str(tmp_path / "half")
    first = [a if a != "8" else "4" for a in argv[:-1]] + [half]
    assert main(first) == 0
    assert main(argv[:-1] + [half, "--resume"]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]  # noqa: E731
    for name in ("metrics.jsonl", "lyapunov.jsonl"):
        a, b = read_jsonl(os.path.join(out, name)), read_jsonl(os.path.join(half, name))
        assert strip(a) == strip(b), name
    assert read_jsonl(os.path.join(out, "eval.jsonl"))[-1] == read_jsonl(os.path.join(half, "eval.jsonl"))[-1]
    config = RunConfig.from_json(json.load(open(os.path.join(out, "config.json"))))
    template = jax.jit(build(config).init)(run_key(config.seed))
    sa, _ = ckpt.load(os.path.join(out, "checkpoint.msgpack"), template)
    sb, _ = ckpt.load(os.path.join(half, "checkpoint.msgpack"), template)
    for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------- rnnjax dynamics
def test_dynamics_command_writes_what_fixed_points_finds(lyap_run, tmp_path, capsys):
    run, _ = lyap_run
    out = str(tmp_path / "dyn")
    assert main(["dynamics", "--run", run, "--out", out, "--num-initial", "64", "--steps", "300",
                 "--sequences", "4"]) == 0
    result = json.load(open(os.path.join(out, "fixed_points.json")))
    for name in ("trajectories.png", "eigenvalues.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000
    assert result["count"] >= 1 and result["count"] == len(result["points"])
    assert result["stable_count"] == sum(p["stable"] for p in result["points"])
    for p in result["points"]:
        assert p["q"] < result["tol"] and len(p["eigenvalue_moduli"]) == 6
        assert p["stable"] == (max(p["eigenvalue_moduli"]) < 1)
    assert f"{result['count']} fixed points ({result['stable_count']} stable)" in capsys.readouterr().err
    # the same points from the library, on the same initial carries
    config = RunConfig.from_json(json.load(open(os.path.join(run, "config.json"))))
    trainer = build(config)
    state, _ = ckpt.load(os.path.join(run, "checkpoint.msgpack"), jax.jit(trainer.init)(run_key(config.seed)))
    cell, params = trainer.model.cell, state.params.cell
    init = dynamics.initial_carries_from_states(cell, params, trainer.task.eval_batch().inputs[:4], 64,
                                                key=jax.random.key(0), noise=0.1)
    fp = dynamics.fixed_points(cell, params, initial_carries=init, steps=300)
    assert result["count"] == int(fp.fixed.sum()) and result["stable_count"] == int((fp.fixed & fp.stable).sum())


def test_dynamics_command_refuses_bad_input(tmp_path, capsys):
    for argv, message in ((["--run", str(tmp_path / "none")], "--run: "),
                          (["--run", str(tmp_path), "--num-initial", "0"], "--num-initial"),
                          (["--run", str(tmp_path), "--noise", "-1"], "--noise"),
                          (["--run", str(tmp_path)], "no config.json")):
        capsys.readouterr()
        assert main(["dynamics", *argv, "--out", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err
        assert not os.path.exists(tmp_path / "o")
