"""``rnnjax search``: hyper-parameter search on Optuna, ``--pack K`` trials trained as one compiled program.

Start the same command on as many machines as you like: they share the study through ``--storage`` (a
PostgreSQL/MySQL/SQLite URL, or a journal file on a shared filesystem; default: the journal file
``--out/study.journal``), and ``--trials N`` is the total across all of them (each worker counts the
study's trials before every ask, so concurrent workers overshoot by at most one each). Every
completed trial's value is the evaluation loss of the ``rnnjax train`` command recorded with it, bit
for bit (on CPU; ``--vectorize`` trades that for vectorised gradients, as in ``rnnjax sweep``).

Writes to ``--out DIR`` (shared by the workers; each writes the files atomically when it finishes):

- ``search.json``: ``{"study", "storage", "space", "config", "counts", "best", "trials": [{"number", "state",
  "value", "params", "steps", "command", "fail_reason", "worker", "pack", "intermediate"}, ...], "figures",
  "worker": {"trials", "packs", "wall_s"}}``;
- ``search.md``: every trial as a table with its reproducing ``rnnjax train`` command, and the best one;
- ``optimization_history.png``, ``param_importances.png``, ``parallel_coordinate.png`` (Optuna's
  matplotlib figures; ``--no-figures`` skips them).
"""

from __future__ import annotations

import os
import sys

from rnnjax.cli import CLIError
from rnnjax.cli._runflags import add_run_arguments, as_cli_error, config_from_args

KEPT_LOOP_FLAGS = ("steps", "eval_every", "max_skips")  # the other loop flags (logging, checkpoints) are train's


def not_for_search() -> tuple:
    """``RunConfig`` loop fields a search has no use for (checkpoint, logging and diagnostics periods)."""
    from rnnjax.train import RunConfig

    return tuple(f for f in RunConfig.loop_fields() if f not in KEPT_LOOP_FLAGS)


def register(subparsers) -> None:
    """Add the ``search`` command."""
    from rnnjax.search import DEFAULT_STUDY, PRUNERS, SAMPLERS

    p = subparsers.add_parser(
        "search",
        help="hyper-parameter search on Optuna, trials packed into compiled programs",
        description="Search hyper-parameters with Optuna: each worker asks --pack trials at a time, trains "
        "those that share shapes as ONE compiled program (rows bitwise the separate `rnnjax train` runs), "
        "reports the evaluation loss every --eval-every steps to the pruner and tells Optuna each result. "
        "Run the same command on several machines with one --storage to share the study; --trials is the total.",
    )
    p.add_argument("--space", required=True, metavar="SPEC",
                   help="NAME=KIND:ARGS,... with KIND uniform:LO:HI, loguniform:LO:HI, int:LO:HI[:STEP], logint:LO:HI "
                   "or choice:A,B,...; e.g. 'lr=loguniform:1e-4:1e-1,init_gain=uniform:0.5:2,hidden=choice:32,64'")
    p.add_argument("--trials", type=int, default=20, metavar="N", help="trials in the study, all workers together "
                   "(default 20)")
    p.add_argument("--pack", type=int, default=4, metavar="K", help="trials asked at once and trained as one "
                   "program when their shapes agree (default 4; 1 = one program per trial)")
    p.add_argument("--sampler", default="tpe", help=f"{', '.join(SAMPLERS)} (default tpe)")
    p.add_argument("--sampler-seed", type=int, default=None, metavar="S",
                   help="seed of the sampler (default: random; give each worker its own)")
    p.add_argument("--pruner", default="none", help=f"{', '.join(PRUNERS)} (default none)")
    p.add_argument("--pruner-startup", type=int, default=2, metavar="N",
                   help="median pruner: completed trials before it prunes (default 2)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage: sqlite:///FILE, postgresql://..., mysql://..., or a journal file path "
                   "(default: DIR/study.journal)")
    p.add_argument("--study-name", default=DEFAULT_STUDY, metavar="NAME", help=f"default {DEFAULT_STUDY}")
    add_run_arguments(p, exclude=not_for_search())
    p.add_argument("--vectorize", action="store_true",
                   help="batch the gradients of a pack with jax.vmap (faster on accelerators; values then differ "
                   "from the rnnjax train commands by float rounding)")
    p.add_argument("--no-figures", action="store_true", help="do not draw Optuna's figures")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory, shared by the workers")
    p.set_defaults(func=search_command)


def search_command(args) -> int:
    """Handler of ``rnnjax search``: every check, then the search, then the results."""
    from rnnjax import search as se

    # ---- every check before any work (nothing is written until the storage opens)
    base = config_from_args(args)
    try:
        space = se.parse_space(args.space)
        se.check_space(base, space)
        se.report_period(base)
    except ValueError as err:
        raise _error(err) from None
    for flag, value, low in (("--trials", args.trials, 1), ("--pack", args.pack, 1),
                             ("--pruner-startup", args.pruner_startup, 0)):
        if value < low:
            raise CLIError(f"{flag}: expected an integer >= {low}, got {value}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CLIError(f"--out: {args.out} is not a directory")
    try:
        sampler = se.make_sampler(args.sampler, space, seed=args.sampler_seed)
        pruner = se.make_pruner(args.pruner, startup=args.pruner_startup, min_steps=se.report_period(base))
    except ValueError as err:
        raise _error(err) from None
    try:  # an RDB storage connects now: unreachable -> exit 2 before any file is written
        storage = se.open_storage(args.storage, args.out)
        os.makedirs(args.out, exist_ok=True)
        study = se.create_study(storage, args.study_name, sampler, pruner, space=space, base=base)
    except ValueError as err:
        raise _error(err) from None
    except OSError as err:
        raise CLIError(f"--out: cannot create {args.out}: {err.strerror}") from None

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this command prints its own lines
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"search: study {args.study_name!r}, {args.trials} trials in all, {args.pack} per program "
        f"({args.task}, {args.cell}, {base.steps} steps each)")
    result = se.run_search(study, base, space, trials=args.trials, pack=args.pack, out=args.out,
                           method="vmap" if args.vectorize else "map", log=log)
    report = se.write_results(study, args.out, storage=args.storage, figures=not args.no_figures,
                              extra={"worker": {"trials": [r["number"] for r in result.trials],
                                                "packs": result.packs, "wall_s": round(result.wall_s, 3)}})
    best = report["best"]
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(report["counts"].items()))
    print(f"this worker: {len(result.trials)} trials in {result.wall_s:.1f} s; study: {counts}")
    if best is not None:
        print(f"best: trial {best['number']} value {best['value']:.6g} {best['params']}")
        print(f"  {best['command']}")
    print(f"wrote {os.path.join(args.out, 'search.json')} and search.md")
    return 0


def _error(err: ValueError) -> CLIError:
    """A library ``ValueError`` (``"space: ..."``, ``"sampler: ..."``, a RunConfig field) named by its flag."""
    message = str(err).splitlines()[0]
    name, sep, rest = message.partition(":")
    flags = {"space": "--space", "sampler": "--sampler", "pruner": "--pruner", "storage": "--storage",
             "startup": "--pruner-startup", "config": "--study-name"}
    if sep and name in flags:
        return CLIError(f"{flags[name]}:{rest}")
    return as_cli_error(err)
