"""The clipping study (``experiments/clipping.py``) with error bars: 10 seeds per threshold on the study engine.

An Elman ReLU network initialised in the exploding regime (orthogonal W_rec, gain 1.5) trained on the
adding problem (T = 20) with SGD (lr 0.01, momentum 0.9) for 600 steps, without clipping and with
global-norm clipping at 10 and at 1 (Pascanu, Mikolov & Bengio 2013, Alg. 1). Each threshold is one
configuration of ``rnnjax.study`` (mean, 95 % CI over seeds, diverged count; every seed equals the
separate ``rnnjax train`` run, its command is in ``study_runs.csv``).

Usage::

    python experiments/clipping_study.py --out runs/clipping_study     # the committed table (~5 min)
    python experiments/clipping_study.py --seeds 0,1,2 --steps 100 --out /tmp/cs   # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from rnnjax import study
from rnnjax.train import RunConfig

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default=",".join(map(str, range(10))))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--out", required=True)
    p.add_argument("--table", default=os.path.join(HERE, "results", "clipping_study.md"))
    args = p.parse_args(argv)
    base = RunConfig(task="adding", cell="elman-relu", init_gain=1.5, seq_len=20, hidden=32, batch_size=32,
                     steps=args.steps, optimizer="sgd", lr=0.01, momentum=0.9,
                     task_options=(("eval_size", 1000),))
    seeds = [int(s) for s in args.seeds.split(",")]
    result = study.run_study(base, {"clip": [0.0, 10.0, 1.0]}, seeds, out=args.out,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    seconds = sum(g["seconds"] for g in result.groups)  # the groups' own time (also right after a resume)
    table = study.to_markdown(result)
    print(table)
    os.makedirs(os.path.dirname(args.table), exist_ok=True)
    stem = os.path.splitext(args.table)[0]
    shutil.copyfile(os.path.join(args.out, "learning_curves.png"), stem + "_curves.png")
    shutil.copyfile(os.path.join(args.out, "metric_vs_clip.png"), stem + ".png")
    with open(args.table, "w") as f:
        f.write(f"# Clipping a diverging run, {len(seeds)} seeds\n\n"
                f"Command: `python experiments/clipping_study.py --out DIR` ({seconds / 60:.1f} min wall on a "
                f"{os.cpu_count()}-core CPU, compilation included). Clip 0 = no clipping. A run with 20 consecutive "
                f"non-finite steps stops (counted as diverged).\n\n{table}\n"
                f"![eval MSE against the clipping threshold]({os.path.basename(stem)}.png)\n\n"
                f"Learning curves: [{os.path.basename(stem)}_curves.png]({os.path.basename(stem)}_curves.png)\n")
    print(f"wrote {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
