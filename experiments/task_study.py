"""The task experiments (``experiments/task_*.py``) with error bars: 5 seeds each, on the study engine.

Each ``task_*.py`` script trains one seed; this runs the same settings (cell, hidden size, sequence
length, optimizer, batch, steps) as a ``rnnjax.study`` with 5 seeds and writes one table with mean and
95 % CI over seeds of the evaluation loss and accuracy, the solved fraction against each script's
target, and the gradient-flow summaries. The evaluation set is the task's own (``eval_seed`` 0, shared
by all seeds), which for some tasks differs from the script's (noted in the table).

Usage::

    python experiments/task_study.py --out runs/task_study                 # the committed table (all but charlm)
    python experiments/task_study.py --tasks charlm --out runs/charlm_study  # charlm alone (~25 min)
    python experiments/task_study.py --tasks digits,adding --out /tmp/ts   # a subset
"""

from __future__ import annotations

import argparse
import os
import sys

from rnnjax import study
from rnnjax.train import RunConfig

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (base settings of the task_*.py script, axes, solved = the script's target)
STUDIES = {
    "digits": (dict(task="digits", cell="gru", hidden=64, seq_len=8, batch_size=64, steps=1000, lr=3e-3), {},
               "accuracy>0.95"),
    "mnist1d": (dict(task="mnist1d", cell="gru", hidden=128, batch_size=100, steps=1000, lr=3e-3), {},
                "accuracy>0.91"),
    "adding": (dict(task="adding", cell="lstm", hidden=64, seq_len=50, batch_size=64, steps=1500, lr=3e-3),
               {"cell": ["elman-tanh", "lstm", "gru"]}, "loss<0.1*baseline"),
    "copy": (dict(task="copy", cell="lstm", hidden=128, seq_len=10, batch_size=64, steps=2500, lr=5e-3),
             {"cell": ["elman-tanh", "lstm"]}, "loss<0.1*baseline"),
    "reverse": (dict(task="reverse", cell="gru", hidden=128, seq_len=10, batch_size=64, steps=2000, lr=3e-3), {},
                "accuracy>0.95"),
    "sinegen": (dict(task="sinegen", cell="gru", hidden=64, seq_len=50, batch_size=64, steps=1500, lr=3e-3), {},
                "loss<0.001"),
    "sines": (dict(task="sines", cell="gru", hidden=64, seq_len=100, batch_size=32, steps=2000, lr=3e-3), {},
              "loss<0.25*baseline"),
    "charlm": (dict(task="charlm", cell="gru", hidden=256, seq_len=64, tbptt=64, batch_size=32, steps=1500, lr=3e-3,
                    task_options=(("eval_seq_len", 512), ("eval_size", 32))), {}, "loss<1.87"),  # 2.7 bits/char
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default=",".join(n for n in STUDIES if n != "charlm"),
                   help=f"comma-separated subset of {', '.join(STUDIES)} (default: all but charlm, ~5 min per seed)")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--out", required=True)
    p.add_argument("--table", default=os.path.join(HERE, "results", "task_study.md"))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        p.error(f"--tasks: unknown {unknown}; expected names from {', '.join(STUDIES)}")
    parts = []
    for name in names:
        settings, axes, solved = STUDIES[name]
        base = RunConfig(clip=1.0, **settings)
        result = study.run_study(base, axes, seeds, out=os.path.join(args.out, name), solved=solved,
                                 log=lambda m: print(m, file=sys.stderr, flush=True))
        seconds = sum(g["seconds"] for g in result.groups)
        table = study.to_markdown(result)
        print(f"## {name}\n\n{table}")
        command = "rnnjax study " + " ".join(
            a for a in base.train_argv("DIR")[1:-2]) + "".join(
            f" --{k.replace('_', '-')}s {','.join(map(str, v))}" for k, v in axes.items()) + \
            f" --seeds {args.seeds} --solved '{solved}'"
        parts.append(f"## {name} (`experiments/task_{name}.py` settings; {seconds / 60:.1f} min)\n\n"
                     f"Equivalent command: `{command} --out DIR`\n\n{table}")
    os.makedirs(os.path.dirname(args.table), exist_ok=True)
    with open(args.table, "w") as f:
        f.write(f"# Task experiments, {len(seeds)} seeds each\n\n"
                f"Command: `python experiments/task_study.py --out DIR` (2-core CPU shared with other jobs; the "
                "minutes per task are the groups' training time, compilation included). Mean ± half-width of the "
                "95 % Student-t interval over seeds; all seeds share the task's evaluation set (eval_seed 0). "
                "`solved` uses each script's target.\n\n" + "\n".join(parts))
    print(f"wrote {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
