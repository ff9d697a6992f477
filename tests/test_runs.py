"""Runs you can trust: one run per directory, verified resume, typed options, checkpoints, seeds, writers."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from rnnjax import checkpoint as ckpt
from rnnjax.cli import main
from rnnjax.rundir import DirectoryBusy, RunLock, file_mode, remove_stale_temporaries
from rnnjax.tasks import coerce_option
from rnnjax.train import RunConfig, build, make_optimizer

TINY = ["--task", "adding", "--cell", "elman-tanh", "--hidden", "4", "--seq-len", "6", "--batch-size", "4",
        "--lr", "1e-2", "--seed", "1", "--task-option", "eval_size=32"]




def _snapshot(d):
    """Every file under ``d`` (relative path -> bytes, mode)."""
    out = {}
    for root, _, files in os.walk(d):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, d)] = (f.read(), os.stat(path).st_mode)
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 6-step run (evaluation and checkpoint every 2 steps)."""
    out = str(tmp_path_factory.mktemp("runs") / "finished")
    assert main(["train", *TINY, "--steps", "6", "--eval-every", "2", "--out", out]) == 0
    return out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _refused(run, argv, message, capsys, code=2):
    """``main(argv)`` on ``run`` exits ``code`` with ``message`` on stderr, leaving ``run`` byte for byte as it was."""
    before = _snapshot(run)
    capsys.readouterr()
    assert main(argv) == code
    assert message in capsys.readouterr().err
    assert _snapshot(run) == before


# ------------------------------------------------------------------------------------------ one run per dir
def test_a_locked_directory_refuses_a_second_run_at_once_and_stays_unchanged(tmp_path, capsys):
    out = str(tmp_path / "busy")
    with RunLock(out):
        assert main(["train", *TINY, "--steps", "2", "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and out in err and "in use by another rnnjax run" in err
        assert f"pid {os.getpid()}" in err  # the holder, from the kernel's lock table
        assert os.listdir(out) == []
        with pytest.raises(DirectoryBusy):
            RunLock(out)
    assert not os.path.exists(out)  # the lock created it, nothing was written: removed again


def test_refused_new_run_leaves_no_directory_behind(tmp_path, capsys):
    out = str(tmp_path / "new")
    assert main(["train", *TINY, "--steps", "2", "--gradflow-every", "1", "--task-option", "variable_length=nope",
                 "--out", out]) == 2
    assert "--task-option variable_length" in capsys.readouterr().err
    assert not os.path.exists(out)


# ------------------------------------------------------------------------------------------ verified resume
def test_resume_refuses_a_foreign_checkpoint_byte_identical(finished, tmp_path, capsys):
    other = str(tmp_path / "other")
    assert main(["train", *TINY[:-6], "--lr", "5e-2", *TINY[-4:], "--steps", "2", "--out", other]) == 0
    mixed = _copy(finished, tmp_path / "mixed")
    shutil.copy(os.path.join(other, "checkpoint.msgpack"), os.path.join(mixed, "checkpoint.msgpack"))
    _refused(mixed, ["train", *TINY, "--steps", "8", "--eval-every", "2", "--out", mixed, "--resume"],
             "checkpoint.msgpack was written by a different run (--lr 0.05 there, 0.01 now)", capsys)


def test_resume_refuses_flags_that_differ_from_config_json(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path / "run")
    _refused(run, ["train", *TINY, "--hidden", "5", "--steps", "8", "--out", run, "--resume"],
             "--hidden 4 there, 5 now", capsys)


def test_resume_refuses_logs_without_a_checkpoint(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path / "run")
    os.unlink(os.path.join(run, "checkpoint.msgpack"))
    _refused(run, ["train", *TINY, "--steps", "6", "--eval-every", "2", "--out", run, "--resume"], "has logs", capsys)


def test_resume_of_a_finished_run_changes_nothing(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path / "run")
    _refused(run, ["train", *TINY, "--steps", "6", "--eval-every", "2", "--out", run, "--resume"], "nothing to do",
             capsys, code=0)
    _refused(run, ["train", *TINY, "--steps", "4", "--out", run, "--resume"], "below the checkpoint's step", capsys)


def test_resume_extends_a_finished_run_like_one_longer_run(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    longer = str(tmp_path / "longer")
    assert main(["train", *TINY, "--steps", "10", "--eval-every", "2", "--out", run, "--resume"]) == 0
    assert main(["train", *TINY, "--steps", "10", "--eval-every", "2", "--out", longer]) == 0
    a, b = ([json.loads(x) for x in open(os.path.join(d, "eval.jsonl"))] for d in (run, longer))
    assert a == b  # bitwise: the resumed run is the longer run
    steps = [json.loads(x)["step"] for x in open(os.path.join(run, "metrics.jsonl"))]
    assert steps == list(range(1, 11))


# ------------------------------------------------------------------------------------------ typed options
@pytest.mark.parametrize("text, value", [("False", False), ("no", False), ("0", False), ("TRUE", True),
                                         ("yes", True), ("1", True)])
def test_boolean_task_options_parse_by_their_declared_type(text, value):
    assert coerce_option("adding", "variable_length", text) is value


@pytest.mark.parametrize("key, text", [("variable_length", "maybe"), ("variable_length", 1), ("eval_size", "1.5"),
                                       ("min_len", "two")])
def test_mistyped_task_options_name_the_option_and_type(key, text):
    with pytest.raises(ValueError, match=f"^{key}: task 'adding' expects"):
        coerce_option("adding", key, text)


def test_variable_length_false_stays_off(tmp_path):
    out = str(tmp_path / "run")
    # 2 steps: one 2-step chunk, as in `finished` (variable_length=False is the default): a compilation-cache hit
    assert main(["train", *TINY, "--steps", "2", "--task-option", "variable_length=False", "--out", out]) == 0
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["task_options"] == {"eval_size": 32, "variable_length": False}
    trainer = build(RunConfig.from_json(json.load(open(os.path.join(out, "config.json")))))
    assert trainer.task.eval_batch().input_lengths is None  # fixed-length batches


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_at_every_evaluation(tmp_path, monkeypatch):
    steps = []
    real = ckpt.save
    monkeypatch.setattr(ckpt, "save", lambda path, tree, meta: (steps.append(meta["step"]), real(path, tree, meta)))
    assert main(["train", *TINY, "--steps", "6", "--eval-every", "2", "--out", str(tmp_path / "r")]) == 0
    assert steps == [0, 2, 4, 6]  # step 0: a run is resumable from its first log line on


def test_stale_temporaries_removed_and_checkpoint_mode_follows_umask(tmp_path):
    path = str(tmp_path / "checkpoint.msgpack")
    stale = [path + ".abc123.tmp", path + ".tmp-999"]
    for name in stale:
        open(name, "w").close()
    old = os.umask(0o002)
    try:
        ckpt.save(path, {"w": np.ones(3, np.float32)}, {"step": 1})
        assert os.stat(path).st_mode & 0o777 == 0o664 == file_mode()
    finally:
        os.umask(old)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.msgpack"]
    assert remove_stale_temporaries(path) == []


# ------------------------------------------------------------------------------------------ seeds
def test_every_seed_is_scored_on_the_same_evaluation_set():
    base = RunConfig(task="adding", cell="elman-tanh", hidden=4, seq_len=6, batch_size=4,
                     task_options=(("eval_size", 16),))
    sets = [build(RunConfig(**{**base.__dict__, "seed": s})).task.eval_batch() for s in (0, 7)]
    np.testing.assert_array_equal(sets[0].inputs, sets[1].inputs)
    other = build(RunConfig(**{**base.__dict__, "eval_seed": 5})).task.eval_batch()
    assert not np.array_equal(other.inputs, sets[0].inputs)
    # a config.json written before eval_seed existed keeps the evaluation set of its seed
    legacy = {k: v for k, v in base.to_json().items() if k != "eval_seed"} | {"seed": 3}
    assert RunConfig.from_json(legacy).eval_seed == 3


def test_make_optimizer_clip_none_means_no_clipping():
    import jax.numpy as jnp

    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.full(3, 100.0)}
    for clip in (None, 0):
        opt = make_optimizer(0.1, clip=clip, name="sgd")
        updates, _ = opt.update(grads, opt.init(params), params)
        np.testing.assert_allclose(updates["w"], -10.0)
    with pytest.raises(ValueError, match="^clip: expected a non-negative number"):
        make_optimizer(0.1, clip=-1.0)


# ------------------------------------------------------------------------------------------ writers
def test_tensorboard_event_files_hold_the_scalars_and_the_profile(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = str(tmp_path / "tb")
    assert main(["train", *TINY, "--steps", "4", "--eval-every", "2", "--gradflow-every", "2", "--tensorboard",
                 "--out", out]) == 0
    acc = EventAccumulator(os.path.join(out, "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/grad_norm", "eval/loss", "gradflow/first_step_norm"} <= set(tags["scalars"])
    assert "gradflow/profile" in tags["images"]
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    jsonl = [json.loads(x)["loss"] for x in open(os.path.join(out, "metrics.jsonl"))]
    np.testing.assert_allclose([e.value for e in acc.Scalars("train/loss")], jsonl, rtol=1e-6)
    assert [e.step for e in acc.Scalars("eval/loss")] == [2, 4]


def test_remat_flag_trains_the_same_model(tmp_path):
    plain, remat = str(tmp_path / "plain"), str(tmp_path / "remat")
    # 2 steps: the plain run is one 2-step chunk, a program `finished` has compiled (the module's compilation cache)
    assert main(["train", *TINY, "--steps", "2", "--out", plain]) == 0
    assert main(["train", *TINY, "--steps", "2", "--remat", "2", "--out", remat]) == 0
    loss = [json.load(open(os.path.join(d, "summary.json")))["eval"]["loss"] for d in (plain, remat)]
    np.testing.assert_allclose(loss[0], loss[1], rtol=1e-6)
    assert json.load(open(os.path.join(remat, "config.json")))["remat"] == 2


def test_gradflow_on_a_task_that_cannot_use_it_is_refused_before_writing(tmp_path, capsys):
    out = str(tmp_path / "rev")
    args = ["train", "--task", "reverse", "--cell", "gru", "--hidden", "4", "--seq-len", "4", "--batch-size", "4",
            "--steps", "1", "--task-option", "eval_size=8", "--out", out]
    assert main([*args, "--gradflow-every", "1"]) == 2
    err = capsys.readouterr().err
    assert "--gradflow-every:" in err and err.strip().count("\n") == 0
    assert not os.path.exists(out)
    assert main(args) == 0  # the retry without the flag is not refused


def test_bidirectional_two_layer_digits_run_resumes_exactly(tmp_path):
    args = ["train", "--task", "digits", "--cell", "elman-tanh", "--bidirectional", "--layers", "2", "--dropout", "0.1",
            "--hidden", "4", "--batch-size", "8", "--eval-every", "2"]
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    assert main([*args, "--steps", "4", "--out", whole]) == 0
    assert main([*args, "--steps", "2", "--out", parts]) == 0
    assert main([*args, "--steps", "4", "--out", parts, "--resume"]) == 0
    a, b = (ckpt.read_leaves(os.path.join(d, "checkpoint.msgpack")) for d in (whole, parts))
    assert set(a) == set(b) and any("backward" in k for k in a)  # bidirectional parameters are checkpointed
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    summaries = [json.load(open(os.path.join(d, "summary.json"))) for d in (whole, parts)]
    assert summaries[0]["eval"] == summaries[1]["eval"] and summaries[0]["eval"]["accuracy"] is not None


def test_make_trainer_names_a_pattern_or_width_mismatch():
    import rnnjax
    from rnnjax.tasks import get_task

    copy = get_task("copy", seq_len=4, eval_size=8)
    with pytest.raises(ValueError, match="a many_to_one model cannot train on task 'copy', whose pattern is "
                                         "many_to_many"):
        rnnjax.make_trainer(rnnjax.many_to_one(rnnjax.gru(copy.input_size, 4), 9, loss="xent"), copy,
                            make_optimizer(1e-3), batch_size=2)
    adding = get_task("adding", seq_len=4, eval_size=8)
    with pytest.raises(ValueError, match="the cell takes inputs of width 3, task 'adding' gives width 2"):
        rnnjax.make_trainer(rnnjax.many_to_one(rnnjax.gru(3, 4), 1), adding, make_optimizer(1e-3), batch_size=2)


def test_single_runs_pay_no_batch_invariance():
    """The update of a plain run is one computation; only a vectorised sweep's trainer opts into the per-run
    ``sequential_vmap`` + ``lax.cond`` update (the 1.24-1.47x tax that every run used to pay)."""
    config = RunConfig(task="adding", cell="elman-tanh", hidden=3, seq_len=4, batch_size=2)

    def primitives(trainer):
        state = jax.eval_shape(trainer.init, jax.random.key(0))
        return str(jax.make_jaxpr(trainer.step)(state))

    assert "cond" not in primitives(build(config))
    assert "cond" in primitives(build(config, batch_invariant=True))
