"""Tests of rnnjax.search and ``rnnjax search``: Optuna trials packed into compiled programs.

The independent truths: the separate ``rnnjax train`` run of a trial's recorded command (bit for bit), a
plain single-run loop (``jit(trainer.run)`` chunk by chunk, no ``lax.map``), the study as Optuna stores it
(journal file, PostgreSQL), and XLA's own compilation log (``jax_log_compiles``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile

import jax
import pytest

optuna = pytest.importorskip("optuna")

from rnnjax import search as se  # noqa: E402
from rnnjax.cli import main  # noqa: E402
from rnnjax.train import RunConfig, build, run_key  # noqa: E402

# elman-relu: a learning rate of 1000 diverges within a few steps (the failure test); 1e-3 to 3e-2 train
TINY = ["--task", "adding", "--cell", "elman-relu", "--hidden", "4", "--seq-len", "6", "--batch-size", "4",
        "--steps", "20", "--eval-every", "10", "--max-skips", "3", "--task-option", "eval_size=32"]
BASE = RunConfig(task="adding", cell="elman-relu", hidden=4, seq_len=6, batch_size=4, steps=20, eval_every=10,
                 max_skips=3, task_options=(("eval_size", 32),))
SPACE = "lr=loguniform:1e-3:3e-2"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _workers(out, extra=(), n=2, env=None):
    """Start ``n`` ``rnnjax search`` processes together on one study; wait; return their stderr texts."""
    cmd = [sys.executable, "-m", "rnnjax", "search", *TINY, "--space", SPACE, "--trials", "8", "--pack", "4",
           "--sampler", "random", "--no-figures", "--out", str(out), *extra]
    env = dict(os.environ, JAX_LOG_COMPILES="1", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **(env or {}))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # every pack compiles its program: the count below is exact
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for _ in range(n)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    return [e for _, e in outs]


_SINGLE = {}


def _single_run_loss(config):
    """The evaluation loss of ``config`` by a plain single run: jit(init), jit(run) per eval period, jit(evaluate).

    Runs differing only in the learning rate share one trainer (the rate is a value in the optimizer state,
    passed to ``init``), so the references compile once; the x64 mode is the caller's.
    """
    key = (dataclasses.replace(config, lr=1e-3, steps=1), jax.config.jax_enable_x64)
    if key not in _SINGLE:
        trainer = build(key[0])
        _SINGLE[key] = (jax.jit(trainer.init), jax.jit(trainer.run, static_argnums=1), jax.jit(trainer.evaluate))
    init, run, evaluate = _SINGLE[key]
    state = init(run_key(config.seed), config.lr)
    for _ in range(config.steps // config.eval_every):
        state, _ = run(state, config.eval_every)
    return float(evaluate(state.params)["loss"])


def _train_command_loss(command, out):
    argv = shlex.split(command)[1:]
    argv[argv.index("--out") + 1] = str(out)
    assert main(argv) == 0
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)["eval"]["loss"]


def _check_workers(out, logs, study):
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                                        optuna.trial.TrialState.FAIL))
    assert len(study.trials) == len(finished) and 8 <= len(finished) <= 9  # nothing left RUNNING
    numbers = [t.number for t in finished]
    assert sorted(numbers) == list(range(len(finished)))
    # every trial trained by exactly one worker, in exactly one pack, and no two with the same parameters
    packs = [[int(x) for x in m.split(",")] for log in logs for m in re.findall(r"search: trials \[([\d, ]+)\]", log)]
    flat = [n for p in packs for n in p]
    assert sorted(flat) == numbers
    assert len({t.params["lr"] for t in finished}) == len(finished)
    assert all(t.user_attrs["pack"] in packs for t in finished)
    # one compilation of the training program per pack, and a pack holds at most 4 trials (--pack 4)
    for log in logs:
        worker_packs = re.findall(r"search: trials \[([\d, ]+)\]", log)
        assert log.count("Finished XLA compilation of jit(sweep_chunk)") == len(worker_packs) >= 1
    assert max(len(p) for p in packs) == 4 and all(len(p) <= 4 for p in packs)
    return finished


@pytest.fixture
def float32():
    """JAX's default 32-bit mode, as on the command line (the suite runs in x64, tests/conftest.py)."""
    with jax.enable_x64(False):
        yield


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "out"
    logs = _workers(out)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / se.JOURNAL)))
    return out, logs, optuna.load_study(study_name=se.DEFAULT_STUDY, storage=storage)


def test_two_workers_share_one_journal_study(two_workers):
    out, logs, study = two_workers
    finished = _check_workers(out, logs, study)
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == len(finished)  # no pruner, no divergence at these rates
    # the last worker to finish writes after every tell of both: its files hold the whole study
    with open(out / "search.json") as f:
        report = json.load(f)
    assert report["counts"] == {"COMPLETE": len(complete)} and len(report["trials"]) == len(finished)
    best = min(complete, key=lambda t: (t.value, t.number))
    assert report["best"]["number"] == best.number and report["best"]["value"] == best.value
    with open(out / "search.md") as f:
        text = f.read()
    for t in complete:
        assert f"| {t.number} | {t.params['lr']!r} | {t.value:.6g} | COMPLETE | 20 | `rnnjax train " in text
    assert f"best: trial {best.number}, value {best.value:.6g}: `{best.user_attrs['command']}`" in text


def test_values_are_bitwise_the_separate_runs(two_workers, tmp_path, float32):
    """Every completed value equals a plain single run; one trial of each worker equals its `rnnjax train`."""
    _, _, study = two_workers
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len({t.user_attrs["worker"] for t in complete}) == 2
    for t in complete:
        config = dataclasses.replace(BASE, **t.params)
        assert t.value == _single_run_loss(config), t.number
        assert f"--lr {t.params['lr']!r}" in t.user_attrs["command"] and t.user_attrs["steps"] == 20
    t = complete[-1]
    assert t.value == _train_command_loss(t.user_attrs["command"], tmp_path / "run")


class _PruneSmallLR(optuna.pruners.BasePruner):
    """Prunes a trial whose lr is below 5e-3 at its first report: a rule the test knows in advance."""

    def prune(self, study, trial):
        return trial.params["lr"] < 5e-3


def test_pruned_rows_stop_inside_one_program_and_diverged_trials_fail(tmp_path, compiled_programs, float32):
    space = se.parse_space("lr=choice:0.03,0.001,1000.0,0.002")
    base = BASE
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(
        {"lr": [0.03, 0.001, 1000.0, 0.002]}, seed=0), pruner=_PruneSmallLR())
    result, names = compiled_programs(lambda: se.run_search(study, base, space, trials=10, pack=4, out=str(tmp_path)))
    assert names.count("jit(sweep_chunk)") == 1 and len(result.packs) == 1 and len(result.trials) == 4  # capped
    rows = {r["params"]["lr"]: r for r in result.trials}
    for lr in (0.001, 0.002):  # pruned at the first report (step 10): held there, value = the step-10 loss
        r = rows[lr]
        assert r["state"] == "PRUNED" and r["steps"] == 10 and "--steps 10" in r["command"]
        assert r["value"] == _single_run_loss(dataclasses.replace(base, lr=lr, steps=10))
    r = rows[0.03]
    assert r["state"] == "COMPLETE" and r["steps"] == 20
    assert r["value"] == _single_run_loss(dataclasses.replace(base, lr=0.03))
    r = rows[1000.0]
    assert r["state"] == "FAIL" and r["value"] is None and r["fail_reason"].startswith("diverged: 3 consecutive")
    assert r["steps"] < 10
    frozen = {t.number: t for t in study.trials}
    assert frozen[rows[1000.0]["number"]].user_attrs["fail_reason"] == r["fail_reason"]
    assert frozen[rows[0.001]["number"]].state == optuna.trial.TrialState.PRUNED
    report = se.write_results(study, str(tmp_path / "res"))
    assert report["counts"] == {"COMPLETE": 1, "PRUNED": 2, "FAIL": 1}
    assert report["best"]["number"] == rows[0.03]["number"]
    assert report["figures"]["optimization_history"] == "optimization_history.png"
    assert report["figures"]["param_importances"].startswith("skipped")  # one completed trial
    with open(tmp_path / "res" / "optimization_history.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "res" / "search.md") as f:
        text = f.read()
    assert "PRUNED" in text and "diverged" in text and f"best: trial {rows[0.03]['number']}" in text


def test_parse_space():
    space = se.parse_space("lr=loguniform:1e-4:1e-1, init_gain=uniform:0.5:2,hidden=choice:32,64,layers=int:1:3,"
                           "seq_len=int:10:50:20,cell=choice:irnn,elman-tanh,bidirectional=choice:true,false")
    D = optuna.distributions
    assert space == {"lr": D.FloatDistribution(1e-4, 1e-1, log=True), "init_gain": D.FloatDistribution(0.5, 2.0),
                     "hidden": D.CategoricalDistribution([32, 64]), "layers": D.IntDistribution(1, 3),
                     "seq_len": D.IntDistribution(10, 50, step=20), "cell": D.CategoricalDistribution(["irnn",
                                                                                                      "elman-tanh"]),
                     "bidirectional": D.CategoricalDistribution([True, False])}
    assert se.parse_space(se.format_space(space)) == space
    assert se.grid_size(se.parse_space("hidden=choice:4,8,seed=int:0:2")) == 6
    assert se.grid_size(se.parse_space("lr=uniform:0.1:0.2")) is None


@pytest.mark.parametrize("argv, message", [
    (["--space", "rate=uniform:0.1:1"], "--space: unknown parameter 'rate'"),
    (["--space", "steps=int:10:20"], "--space: unknown parameter 'steps'"),
    (["--space", "lr=uniform:0.1"], "--space: lr: expected uniform:LO:HI"),
    (["--space", "lr=uniform:0.5:0.1"], "--space: lr: expected LO < HI"),
    (["--space", "lr=loguniform:0:0.1"], "--space: lr: expected 0 < LO < HI"),
    (["--space", "lr=gauss:0:1"], "--space: lr: unknown kind 'gauss'"),
    (["--space", "hidden=uniform:4:8"], "--space: hidden: uniform needs a float parameter"),
    (["--space", "hidden=choice:4,x"], "--space: hidden: expected an integer, got 'x'"),
    (["--space", "hidden=int:0:4"], "--space: hidden=0: hidden: expected an integer >= 1"),
    (["--space", "cell=choice:lstm,nope"], "--space: cell=nope: unknown cell"),
    (["--space", "lr"], "--space: expected NAME=KIND:ARGS"),
    (["--space", SPACE, "--sampler", "cmaes"], "--sampler: unknown sampler 'cmaes'"),
    (["--space", SPACE, "--sampler", "grid"], "--sampler: grid needs every parameter as choice"),
    (["--space", SPACE, "--pruner", "hyper"], "--pruner: unknown pruner 'hyper'"),
    (["--space", SPACE, "--trials", "0"], "--trials: expected an integer >= 1"),
    (["--space", SPACE, "--pack", "0"], "--pack: expected an integer >= 1"),
    (["--space", SPACE, "--eval-every", "5"], "--eval-every: expected 0, 20 (steps) or at least 10"),
    (["--space", SPACE, "--storage", "postgresql://rnnjax@127.0.0.1:9/none"], "--storage: cannot open"),
    (["--space", SPACE, "--storage", "sqlite:////nonexistent-dir/x.db"], "--storage: cannot open"),
    (["--space", SPACE, "--storage", "/nonexistent-dir/study.journal"], "--storage: no directory"),
])
def test_bad_input_is_one_line_exit_2_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    flags = [a for a in TINY if a not in ("--eval-every", "10")] if "--eval-every" in argv else TINY
    assert main(["search", *flags, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rnnjax search: error: ") and message in err, err
    assert not out.exists()


def test_joining_a_study_with_another_space_is_refused(tmp_path, capsys):
    storage = tmp_path / "shared.journal"
    s = se.open_storage(str(storage), str(tmp_path))
    se.create_study(s, "x", optuna.samplers.RandomSampler(), optuna.pruners.NopPruner(),
                    space=se.parse_space("lr=uniform:0.01:0.1"), base=BASE)
    assert main(["search", *TINY, "--space", SPACE, "--storage", str(storage), "--study-name", "x",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--space: study 'x' searches 'lr=uniform:0.01:0.1'" in capsys.readouterr().err
    assert se.redact("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"


# ------------------------------------------------------------------------------------ PostgreSQL (opt-in)
def _postgres_binaries():
    found = [shutil.which(n) for n in ("initdb", "pg_ctl")]
    if not all(found):
        for root in ("/usr/lib/postgresql",):
            if os.path.isdir(root):
                for version in sorted(os.listdir(root), reverse=True):
                    cand = [os.path.join(root, version, "bin", n) for n in ("initdb", "pg_ctl")]
                    if all(os.path.exists(c) for c in cand):
                        return cand
        return None
    return found


def _server_user():
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name, []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return name, ["runuser", "-u", name, "--"]
    return None, None


@pytest.mark.skipif(os.environ.get("RNNJAX_TEST_POSTGRES") != "1",
                    reason="opt-in: set RNNJAX_TEST_POSTGRES=1 to start a PostgreSQL server (about 30 s)")
def test_two_workers_on_a_real_postgresql_server(tmp_path):
    pytest.importorskip("psycopg2", reason="the postgresql driver psycopg2 is not installed (.[search])")
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql")
    user, prefix = _server_user()
    if user is None:
        pytest.skip("running as root and no non-root user (postgres, nobody) with runuser to run the server")
    initdb, pg_ctl = binaries
    data = pathlib.Path(tempfile.mkdtemp(prefix="rnnjax-pg-"))  # under /tmp: the server's user must reach it
    shutil.chown(data, user=user)
    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", user], check=True,
                   capture_output=True)
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-w", "-l", str(data / "log"), "-o",
                    f"-k {data} -p {port} -h 127.0.0.1", "start"], check=True, capture_output=True)
    try:
        out = tmp_path / "out"
        url = f"postgresql://{user}@127.0.0.1:{port}/postgres"
        logs = _workers(out, ["--storage", url])
        study = optuna.load_study(study_name=se.DEFAULT_STUDY, storage=se.open_storage(url, str(out)))
        finished = _check_workers(out, logs, study)
        t = next(t for t in finished if t.state == optuna.trial.TrialState.COMPLETE)
        with jax.enable_x64(False):
            assert t.value == _single_run_loss(dataclasses.replace(BASE, **t.params))
        with open(out / "search.json") as f:
            assert json.load(f)["storage"] == url
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
