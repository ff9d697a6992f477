"""Kill `rnnjax train` with SIGKILL at random moments, resume it, and check the result is bitwise the uninterrupted run.

One trial: an uninterrupted reference run; then the same run in another
directory, killed ``--kills`` times (each time at a random moment: during
training steps, or during a checkpoint write, with probability 1/2 each) and
resumed with ``--resume`` after every kill, the last resume running to the
end. The trial passes when the final checkpoint's every leaf (parameters,
optimizer state, step, data key, skip counters) and the final evaluation loss
equal the reference's bit for bit, and no temporary file is left behind.

To hit checkpoint writes on purpose, the child process wraps
``rnnjax.checkpoint``'s ``os.replace`` so that it announces itself on stderr
and pauses ``--save-pause`` seconds before renaming: the temporary file is
complete, the rename has not happened — the moment a real crash inside a save
would leave a stale temporary file and the previous checkpoint in place.

Writes ``results.json`` (one row per trial: kills by kind, the steps the
resumes started from, bitwise or not) to ``--out``.

Usage::

    python experiments/kill_resume.py --trials 10 --kills 10 --out runs/kill_resume   # 100 kills, ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from rnnjax import checkpoint as ckpt

RUN = ["train", "--task", "adding", "--cell", "elman-tanh", "--hidden", "16", "--seq-len", "30", "--batch-size", "16",
       "--lr", "1e-2", "--seed", "4", "--steps", "2500", "--checkpoint-every", "100", "--eval-every", "100",
       "--task-option", "eval_size=64"]
SAVING, SAVED = "kill_resume: saving", "kill_resume: saved"
CHILD = f"""
import os, sys, time
import rnnjax.checkpoint as ckpt

class _Os:
    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def replace(src, dst):
        sys.stderr.write({SAVING!r} + "\\n")
        sys.stderr.flush()
        time.sleep(float(os.environ["KILL_RESUME_SAVE_PAUSE"]))
        os.replace(src, dst)

ckpt.os = _Os()
_save = ckpt.save

def save(*args, **kwargs):
    _save(*args, **kwargs)
    sys.stderr.write({SAVED!r} + "\\n")
    sys.stderr.flush()

ckpt.save = save
from rnnjax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/kill_resume")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--kills", type=int, default=10, help="kills per trial")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    p.add_argument("--save-pause", type=float, default=0.3, help="seconds each checkpoint write waits before rename")
    p.add_argument("--steps", type=int, default=2500, help="training steps of each run (a checkpoint every 100)")
    p.add_argument("--alternate", action="store_true",
                   help="kill during a checkpoint write and during steps in turn (save first) instead of at random")
    return p.parse_args(argv)


class Child:
    """A ``rnnjax train`` child process whose checkpoint writes are counted as they are announced on stderr."""

    def __init__(self, argv: list[str], env: dict):
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, *argv], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.saving = self.saved = 0  # checkpoint writes begun (paused before the rename) and finished
        self.ended = False
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.saving += line.startswith(SAVING)
                self.saved += line.startswith(SAVED)
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float = 300.0) -> bool:
        """Wait until ``predicate(self)`` holds or the process's stderr closed; return ``predicate(self)``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self) and not self.ended and time.monotonic() < deadline:
                self.changed.wait(0.2)
            return predicate(self)


def _env(cache: str, pause: float) -> dict:
    env = dict(os.environ, KILL_RESUME_SAVE_PAUSE=str(pause), JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    return env


def _final(out: str) -> tuple[dict, float]:
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    return ckpt.read_leaves(os.path.join(out, "checkpoint.msgpack")), summary["eval"]["loss"]


def _run(steps: int) -> list[str]:
    """``RUN`` with ``--steps steps``."""
    run = list(RUN)
    run[run.index("--steps") + 1] = str(steps)
    return run


def trial(out: str, *, kills: int, rng: random.Random, cache: str, pause: float, steps: int = 2500,
          alternate: bool = False) -> dict:
    """One reference run and one run killed ``kills`` times; returns the trial's row.

    ``alternate``: the kills fall during a checkpoint write and during steps in turn (save first), not at random.
    """
    ref, victim = os.path.join(out, "reference"), os.path.join(out, "killed")
    run = _run(steps)
    done = Child([*run, "--out", ref], _env(cache, 0.0))
    if done.proc.wait() != 0:
        raise RuntimeError(f"reference run failed: {done.lines[-3:]}")
    kinds, starts = [], []
    for k in range(kills + 1):
        resume = ["--resume"] if os.path.exists(os.path.join(victim, "config.json")) else []
        child = Child([*run, "--out", victim, *resume], _env(cache, pause))
        if k == kills:  # the last resume runs to the end
            if child.proc.wait() != 0:
                raise RuntimeError(f"final resume failed: {child.lines[-3:]}")
            break
        kind = ("save", "steps")[k % 2] if alternate else rng.choice(["steps", "save"])
        target = rng.randint(1, 2)  # which of this process's checkpoint writes (the first is step 0 or the next)
        if kind == "save":  # inside the pause of a checkpoint write: after the temporary file, before the rename
            child.wait_for(lambda c: c.saving >= target)
            time.sleep(rng.uniform(0.0, pause * 0.8))
        else:  # after a checkpoint write, while the next chunk of steps runs
            child.wait_for(lambda c: c.saved >= target)
            time.sleep(rng.uniform(0.0, 0.05))
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGKILL)
            kinds.append(kind)
        else:
            kinds.append("missed (run had finished)")
        child.proc.wait()
        path = os.path.join(victim, "checkpoint.msgpack")  # none yet if killed inside the step-0 save
        starts.append(int(ckpt.load_metadata(path)["step"]) if os.path.exists(path) else 0)
    want, got = _final(ref), _final(victim)
    equal = set(want[0]) == set(got[0]) and all(np.array_equal(want[0][k], got[0][k]) for k in want[0])
    leftovers = [n for n in os.listdir(victim) if ".tmp" in n]
    return {"kills": kinds, "resumed_from_steps": starts, "bitwise": bool(equal and want[1] == got[1]),
            "eval_loss": got[1], "reference_eval_loss": want[1], "temporary_files_left": leftovers}


def main(argv=None) -> int:
    args = parse(argv)
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    rows = []
    cache = tempfile.mkdtemp(prefix="kill_resume_cache_")
    t0 = time.perf_counter()
    try:
        for i in range(args.trials):
            work = os.path.join(args.out, f"trial{i}")
            shutil.rmtree(work, ignore_errors=True)
            row = trial(work, kills=args.kills, rng=rng, cache=cache, pause=args.save_pause, steps=args.steps,
                        alternate=args.alternate)
            rows.append(row)
            print(f"trial {i}: kills {row['kills']} resumed from {row['resumed_from_steps']} "
                  f"bitwise {row['bitwise']}", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    kills = [k for r in rows for k in r["kills"] if not k.startswith("missed")]
    summary = {
        "trials": len(rows),
        "kills": len(kills),
        "kills_during_save": kills.count("save"),
        "kills_during_steps": kills.count("steps"),
        "bitwise_trials": sum(r["bitwise"] for r in rows),
        "temporary_files_left": sum(len(r["temporary_files_left"]) for r in rows),
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "run": _run(args.steps),
        "rows": rows,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{summary['kills']} kills ({summary['kills_during_save']} during checkpoint writes), "
          f"{summary['bitwise_trials']}/{len(rows)} trials bitwise equal to the uninterrupted run, "
          f"{summary['temporary_files_left']} temporary files left; {summary['wall_time_s']} s")
    return 0 if summary["bitwise_trials"] == len(rows) and not summary["temporary_files_left"] else 1


if __name__ == "__main__":
    sys.exit(main())
