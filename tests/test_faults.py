"""Fault injection on real processes: SIGKILL at random moments, and two runs started on one directory."""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["train", "--task", "adding", "--cell", "elman-tanh", "--hidden", "4", "--seq-len", "6", "--batch-size", "4",
        "--steps", "200", "--task-option", "eval_size=32"]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # rnnjax, installed or not
    env.pop("JAX_ENABLE_X64", None)
    return env


def test_sigkilled_runs_resume_bitwise_equal_to_the_uninterrupted_run(tmp_path):
    """One run killed twice, once inside a checkpoint write (temporary file complete, rename pending) and once
    during training steps, then resumed to the end: bitwise the uninterrupted run, no temporary file left.

    ``python experiments/kill_resume.py --trials 10 --kills 10`` is the long version (100 kills at random).
    """
    out = tmp_path / "kills"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "kill_resume.py"), "--trials", "1",
                           "--kills", "2", "--alternate", "--steps", "500", "--seed", "0", "--save-pause", "0.2",
                           "--out", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["kills"] == 2 and result["kills_during_save"] == 1 and result["kills_during_steps"] == 1
    assert result["bitwise_trials"] == 1 and result["temporary_files_left"] == 0


def test_two_runs_started_together_exactly_one_proceeds(tmp_path):
    out = str(tmp_path / "shared")
    argv = {lr: [sys.executable, "-m", "rnnjax", *TINY, "--lr", lr, "--out", out] for lr in ("0.01", "0.02")}
    started = time.monotonic()
    procs = {lr: subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for lr, a in argv.items()}
    ended = {}
    while len(ended) < 2 and time.monotonic() - started < 300:
        for lr, p in procs.items():
            if lr not in ended and p.poll() is not None:
                ended[lr] = time.monotonic() - started
        time.sleep(0.02)
    codes = {lr: p.wait() for lr, p in procs.items()}
    assert sorted(codes.values()) == [0, 2], {lr: p.stderr.read()[-500:] for lr, p in procs.items()}
    loser = next(lr for lr, c in codes.items() if c == 2)
    winner = next(lr for lr, c in codes.items() if c == 0)
    assert ended[loser] < ended[winner]  # refused at the lock, before compiling anything (no wall-clock bound)
    assert out in procs[loser].stderr.read()
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert config["lr"] == float(winner)
    steps = [json.loads(x)["step"] for x in open(os.path.join(out, "metrics.jsonl"))]
    assert steps == list(range(1, 201))  # one run's lines, once each
    from rnnjax import checkpoint as ckpt

    assert ckpt.load_metadata(os.path.join(out, "checkpoint.msgpack"))["config"]["lr"] == float(winner)
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    assert summary["lr"] == float(winner) and summary["status"] == "completed"
    assert sorted(os.listdir(out)) == ["checkpoint.msgpack", "config.json", "eval.jsonl", "metrics.jsonl",
                                       "summary.json"]
