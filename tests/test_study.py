"""Tests of rnnjax.study and ``rnnjax study``: rows are the separate runs, statistics are the textbook ones,
a killed study resumes without retraining finished groups, and bad input is refused before any work."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex

import chex
import jax
import numpy as np
import pytest
from scipy import stats

import rnnjax
from rnnjax import study, sweep
from rnnjax.cli import main
from rnnjax.train import RunConfig, build, run_key


TINY = RunConfig(task="adding", cell="elman-tanh", hidden=8, seq_len=8, batch_size=8, steps=15, lr=1e-2,
                 task_options=(("eval_size", 64),))
CLI = ["study", "--task", "adding", "--cells", "elman-tanh,gru", "--seq-len", "8", "--hidden", "8", "--batch-size",
       "8", "--steps", "15", "--lr", "0.01", "--task-option", "eval_size=64", "--seeds", "0,1,2"]


def _single_run(config):
    """Independent truth: the run alone, as ``rnnjax train`` builds it (jitted init and run)."""
    trainer = build(config)
    state, metrics = jax.jit(trainer.run, static_argnums=1)(jax.jit(trainer.init)(run_key(config.seed), config.lr),
                                                            config.steps)
    return state, jax.jit(trainer.evaluate)(state.params)


@pytest.fixture(scope="module")
def cli_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    assert main([*CLI, "--out", str(out)]) == 0
    return out, study.load(out)


def test_cli_writes_tables_and_figures_with_textbook_statistics(cli_study):
    out, report = cli_study
    for name in ("study.json", "study.csv", "study_runs.csv", "study.md", "learning_curves.png",
                 "metric_vs_configuration.png"):
        assert (out / name).exists(), name
    configs = report["configurations"]
    assert [c["settings"] for c in configs] == [{"cell": "elman-tanh"}, {"cell": "gru"}]
    for c in configs:
        assert [r["seed"] for r in c["runs"]] == [0, 1, 2]
        values = np.array([r["eval_loss"] for r in c["runs"]])
        m = c["metrics"]["eval_loss"]
        assert m["n"] == 3 and m["values"] == list(values)
        assert m["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert m["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert m["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3), rel=1e-12)
        threshold = 0.1 * c["baseline_loss"]
        assert c["solved_fraction"] == pytest.approx(np.mean(values < threshold))
        assert c["diverged"] == 0 and len({round(v, 9) for v in values}) == 3  # seeds are different runs
        for r in c["runs"]:  # gradient-flow summaries at init and end
            for moment in ("gradflow_init", "gradflow_end"):
                assert set(r[moment]) == {"decay_rate", "grad_ratio", "lambda_max"}
                assert all(np.isfinite(v) for v in r[moment].values())
        assert c["gradflow"]["init"]["lambda_max"]["n"] == 3
    table = (out / "study.md").read_text()
    assert table.count("\n| elman-tanh |") == 1 and table.count("\n| gru |") == 1
    assert "3 seeds (0, 1, 2), 15 steps" in table
    rows = (out / "study_runs.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 and rows[0].startswith("cell,seed,eval_loss")
    for name in ("learning_curves.png", "metric_vs_configuration.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_each_seed_is_the_separate_rnnjax_train_run(cli_study, tmp_path):
    _, report = cli_study
    row = report["configurations"][1]["runs"][2]  # gru, seed 2
    argv = shlex.split(row["command"])[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "run")
    assert main(argv) == 0
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert row["eval_loss"] == summary["eval"]["loss"]  # bit for bit


def test_killed_study_resumes_without_retraining_finished_groups(tmp_path, monkeypatch):
    out = tmp_path / "s"
    axes = {"cell": ["elman-tanh", "gru"]}
    calls = []
    real = study._train_group

    def dies_in_second_group(spec, members, progress):
        calls.append(members[0][2].cell)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill looks like from inside: the study stops mid-way
        return real(spec, members, progress)

    monkeypatch.setattr(study, "_train_group", dies_in_second_group)
    with pytest.raises(KeyboardInterrupt):
        study.run_study(TINY, axes, seeds=(0, 1), out=out, progress=False, gradflow=False)
    assert len(os.listdir(out / "groups")) == 1 and not (out / "study.json").exists()
    calls.clear()
    monkeypatch.setattr(study, "_train_group", lambda *a: (calls.append(a[1][0][2].cell), real(*a))[1])
    lines = []
    resumed = study.run_study(TINY, axes, seeds=(0, 1), out=out, progress=False, log=lines.append, gradflow=False)
    assert calls == ["gru"]  # only the unfinished group trained again
    assert any("done before, loaded" in line for line in lines)
    fresh = study.run_study(TINY, axes, seeds=(0, 1), progress=False, gradflow=False)
    assert [r["eval_loss"] for c in resumed.configurations for r in c["runs"]] == \
        [r["eval_loss"] for c in fresh.configurations for r in c["runs"]]
    # the same study again: everything loaded, nothing trained
    calls.clear()
    study.run_study(TINY, axes, seeds=(0, 1), out=out, progress=False, gradflow=False)
    assert calls == []


def test_a_different_study_in_the_same_directory_is_refused_untouched(tmp_path):
    out = tmp_path / "s"
    study.run_study(TINY, {"lr": [1e-2, 3e-3]}, seeds=(0,), out=out, progress=False, gradflow=False)
    before = {p: (out / p).read_bytes() for p in os.listdir(out) if (out / p).is_file()}
    with pytest.raises(ValueError, match=r"out: .* holds a different study \(hidden 8 there, 9 now\)"):
        study.run_study(dataclasses.replace(TINY, hidden=9), {"lr": [1e-2, 3e-3]}, seeds=(0,), out=out)
    assert before == {p: (out / p).read_bytes() for p in os.listdir(out) if (out / p).is_file()}
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and holds no study"):
        study.run_study(TINY, None, seeds=(0,), out=other)
    assert os.listdir(other) == ["notes.txt"]


def test_value_settings_share_one_group_and_rows_equal_separate_runs():
    """Clip threshold, init gain, lr and a task option only change values: one group, one compiled program;
    every row is bit for bit the run alone."""
    base = dataclasses.replace(TINY, steps=30)  # progress in 3 chunks of 10 steps: still the run's bits
    spec = study.make_spec(base, {"clip": [1.0, 0.1], "init_gain": [0.5, 1.5], "eval_size": [64, 32]}, seeds=(0, 1))
    groups = study.plan_groups(spec)
    assert len(groups) == 1 and len(groups[0][1]) == 16
    # three members that differ in every value setting and in the seed (0th, 3rd and 6th configuration)
    configs = [spec.config(s, seed) for s, seed in zip(spec.configurations()[::3], (0, 1, 0))]
    assert len({(c.clip, c.init_gain, c.task_options, c.seed) for c in configs}) == 3
    reports = []
    result = sweep.run_sweep(configs, progress=reports.append, chunk=10)
    assert reports == [10, 20, 30]
    for i, config in enumerate(configs):
        state, evaluation = _single_run(config)
        chex.assert_trees_all_equal(jax.tree.map(lambda x: x[i], result.states.params), state.params)
        assert result.rows[i]["eval_loss"] == float(evaluation["loss"])
    # a shape setting makes separate groups
    assert len(study.plan_groups(study.make_spec(TINY, {"hidden": [8, 4]}, seeds=(0,)))) == 2


def test_diverging_seed_is_reported_not_fatal():
    base = dataclasses.replace(TINY, cell="irnn", optimizer="sgd", clip=0.0, max_skips=2, steps=8)
    result = study.run_study(base, {"lr": [1e-2, 1e100]}, seeds=(0, 1), progress=False, gradflow=False)
    calm, wild = result.configurations
    assert calm["diverged"] == 0 and calm["metrics"]["eval_loss"]["n"] == 2
    assert wild["diverged"] == 2 and wild["solved_fraction"] == 0.0
    assert all(r["status"] == "stopped_non_finite" for r in wild["runs"])
    assert "eval_loss" not in wild["metrics"] or wild["metrics"]["eval_loss"]["n"] == 0


def test_a_registered_user_cell_is_studied_like_a_built_in_one():
    def leaky(input_size, hidden_size, *, init_gain=1.0, dtype=None):
        return rnnjax.elman(input_size, hidden_size, activation="linear",
                            rec_init=rnnjax.initializers.orthogonal(0.9 * init_gain), dtype=dtype)

    rnnjax.register_cell("leaky-study-test", leaky, overwrite=True)
    try:
        result = study.run_study(dataclasses.replace(TINY, cell="leaky-study-test"), None, seeds=(0, 1),
                                 progress=False)
        mine = result.configurations[0]
        state, evaluation = _single_run(dataclasses.replace(TINY, cell="leaky-study-test", seed=1))
        assert mine["runs"][1]["eval_loss"] == float(evaluation["loss"])
        assert mine["runs"][0]["gradflow_init"]["lambda_max"] == pytest.approx(math.log(0.9), abs=1e-6)
    finally:
        del rnnjax.CELLS["leaky-study-test"]


def test_interval_and_solved_against_hand_computation():
    got = study.interval([1.0, 2.0, None, 4.0, float("nan")])
    values = np.array([1.0, 2.0, 4.0])
    t_975 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # Student t quantile, 2 degrees of freedom: (2p-1)/sqrt(2p(1-p))
    half = t_975 * values.std(ddof=1) / math.sqrt(3)
    assert got["n"] == 3 and got["mean"] == pytest.approx(7 / 3)
    assert got["ci95"] == pytest.approx(half, rel=1e-12) and got["low"] == pytest.approx(7 / 3 - half)
    assert study.interval([5.0])["ci95"] is None and study.interval([None])["mean"] is None
    row = {"eval_loss": 0.01, "eval_accuracy": 0.8, "final_train_loss": 0.2, "baseline_loss": 0.2}
    assert study.is_solved(row, "loss<0.1*baseline") and not study.is_solved(row, "loss<0.01*baseline")
    assert study.is_solved(row, "accuracy>0.75") and not study.is_solved(row, "train_loss<0.1")
    assert not study.is_solved(dict(row, eval_loss=None), "loss<1")


@pytest.mark.parametrize("axes, seeds, solved, message", [
    ({"colour": [1, 2]}, (0,), study.DEFAULT_SOLVED, "axes: unknown setting 'colour'"),
    ({"seed": [1, 2]}, (0,), study.DEFAULT_SOLVED, "axes: 'seed' cannot be a study axis"),
    ({"lr": []}, (0,), study.DEFAULT_SOLVED, "axes: 'lr' has no values"),
    ({"lr": [0.1, 0.1]}, (0,), study.DEFAULT_SOLVED, "axes: 'lr' has duplicate values"),
    ({"hidden": [8, 0]}, (0,), study.DEFAULT_SOLVED, "axes: hidden: expected an integer >= 1"),
    ({"eval_size": ["many"]}, (0,), study.DEFAULT_SOLVED, "axes: eval_size"),
    (None, (), study.DEFAULT_SOLVED, "seeds: expected a non-empty list"),
    (None, (1, 1), study.DEFAULT_SOLVED, "seeds: duplicate values"),
    (None, (0,), "loss<<1", "solved: expected METRIC<VALUE"),
])
def test_bad_specs_are_named(axes, seeds, solved, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        study.run_study(TINY, axes, seeds, solved=solved, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    cases = [
        (["--hiddens", "8,0"], "--hidden: expected an integer >= 1"),
        (["--seeds", "0,0"], "--seeds: duplicate values"),
        (["--cells", "gru,nope"], "--cell: unknown cell 'nope'"),
        (["--solved", "accuracy=1"], "--solved: expected METRIC<VALUE"),
        (["--task-option", "eval_size=x,3"], "--task-option eval_size"),
    ]
    for extra, message in cases:
        rc = main([*CLI, *extra, "--out", str(tmp_path / "new")])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "new").exists()


def test_momentum_is_a_value_setting_and_checked():
    base = dataclasses.replace(TINY, optimizer="sgd", momentum=0.9)
    spec = study.make_spec(base, {"momentum": [0.9, 0.5]}, seeds=(0,))
    (_, members), = study.plan_groups(spec)
    configs = [c for _, _, c in members]
    result = sweep.run_sweep(configs)
    for i, config in enumerate(configs):
        state, _ = _single_run(config)
        chex.assert_trees_all_equal(jax.tree.map(lambda x: x[i], result.states.params), state.params)
        assert float(state.opt_state[-1].hyperparams["momentum"]) == pytest.approx(config.momentum)
        start = jax.jit(build(config).init)(run_key(config.seed), config.lr).params  # what gradflow_init reads
        chex.assert_trees_all_equal(jax.tree.map(lambda x: x[i], result.initial_params), start)
    with pytest.raises(ValueError, match="momentum: optimizer 'adam' takes none"):
        dataclasses.replace(TINY, momentum=0.5).validate()
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\)"):
        dataclasses.replace(base, momentum=1.0).validate()


def test_gradflow_summaries_of_a_token_task_read_the_ids_as_the_model_does():
    """wordlm feeds token ids: lambda_max at init is the cell's spectrum on their one-hot vectors."""
    from rnnjax.gradflow import lyapunov_spectrum

    base = RunConfig(task="wordlm", cell="gru", hidden=8, seq_len=8, batch_size=4, steps=2,
                     task_options=(("eval_size", 4), ("max_words", 5000), ("vocab_size", 50)))
    result = study.run_study(base, None, seeds=(0,), progress=False)
    run = result.configurations[0]["runs"][0]
    assert run["status"] == "completed" and set(run["gradflow_init"]) == {"decay_rate", "grad_ratio", "lambda_max"}
    trainer = build(base)
    params = jax.jit(trainer.init)(run_key(0), base.lr).params
    xs = jax.nn.one_hot(trainer.task.eval_batch().inputs[0], trainer.task.input_size,
                        dtype=jax.tree.leaves(params.cell)[0].dtype)
    want = float(lyapunov_spectrum(trainer.model.cell, params.cell, xs, k=1)[0])
    assert run["gradflow_init"]["lambda_max"] == pytest.approx(want, rel=1e-6)
