"""``rnnjax study``: a grid of run settings × seeds, every metric with its 95 % confidence interval.

Every ``rnnjax train`` flag is accepted; a comma-separated value makes that
setting an axis of the grid (``--cell lstm,gru --seq-len 100,500``; the plural
spellings ``--cells``, ``--seq-lens``, ``--lrs``, ``--init-gains``, ... are the
same flags), and ``--task-option KEY=V1,V2`` sweeps a task option. Every
configuration trains with every ``--seeds`` value (default 0-4) and is scored
on the one evaluation set of ``--eval-seed``. Runs that share shapes train in
one compiled program (``rnnjax.study``). Writes to ``--out DIR``:
``study.json``, ``study.csv``, ``study_runs.csv``, ``study.md``,
``learning_curves.png``, ``metric_vs_<axis>.png`` and ``groups/`` (finished
groups: re-running the same command after a kill resumes there).
"""

from __future__ import annotations

import dataclasses
import sys

from rnnjax.cli import CLIError, parse_list
from rnnjax.cli._runflags import REQUIRED, _fields, _scalar_type, as_cli_error, flag

NOT_FOR_STUDIES = ("seed", "eval_every", "checkpoint_every", "log_every", "gradflow_every", "tensorboard",
                   "lyapunov_every", "lyapunov_k")
SINGLE = ("task", "steps", "max_skips", "eval_seed")  # one value for the whole study


def register(subparsers) -> None:
    """Add the ``study`` command."""
    p = subparsers.add_parser(
        "study",
        help="train a grid of settings x seeds; mean, CI and solved fraction per configuration",
        description="Train every configuration of a grid (comma-separated flag values are axes) with every seed, "
        "group by shapes into compiled sweeps, and report each metric per seed and as mean +- 95%% CI, the "
        "solved fraction and gradient-flow summaries at init and end. Re-run the same command to resume.",
    )
    for field, hint in _fields():
        if field.name in NOT_FOR_STUDIES:
            continue
        text = field.metadata["help"]
        names = [flag(field.name)]
        if field.name not in SINGLE:
            names.append(flag(field.name) + "s")
            text += " (comma-separated values: an axis of the grid)"
        default = field.default
        shown = "" if default is None else f" (default {default})"
        if field.name in REQUIRED and field.name == "task":
            p.add_argument(*names, dest=field.name, required=True, help=text)
        elif field.name in REQUIRED:
            p.add_argument(*names, dest=field.name, required=True, metavar="NAME[,NAME...]", help=text)
        else:
            p.add_argument(*names, dest=field.name, default=None, metavar=field.metadata["metavar"] or "VALUE",
                           help=text + shown)
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE[,VALUE...]",
                   help="task option (several values: an axis of the grid); repeatable")
    p.add_argument("--seeds", default="0,1,2,3,4", metavar="S1,S2,...", help="seeds of every configuration "
                   "(default 0,1,2,3,4)")
    p.add_argument("--solved", default=None, metavar="CRITERION",
                   help="when a seed counts as solved: METRIC<VALUE or METRIC>VALUE, METRIC loss, accuracy or "
                   "train_loss, VALUE a number or F*baseline (default loss<0.1*baseline)")
    p.add_argument("--no-gradflow", action="store_true", help="skip the gradient-flow summaries at init and end")
    p.add_argument("--vectorize", action="store_true", help="batch each group's runs with jax.vmap (rows then "
                   "differ from the separate rnnjax train runs by float rounding)")
    p.add_argument("--out", required=True, help="output directory (new, or a study to resume)")
    p.set_defaults(func=study_command)


def _values(field, hint, text):
    kind = _scalar_type(hint)
    if kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        items = [x.strip().lower() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in words]
        if not items or bad:
            raise CLIError(f"{flag(field.name)}: expected true/false values, got {text!r}")
        values = [words[x] for x in items]
        if len(set(values)) != len(values):
            raise CLIError(f"{flag(field.name)}: duplicate values in {text!r}")
        return values
    if field.name in SINGLE:
        try:
            return [kind(text)]
        except ValueError:
            raise CLIError(f"{flag(field.name)}: expected one {kind.__name__}, got {text!r}") from None
    if kind in (int, float) and hint != kind:  # Optional[int]: "none" allowed
        items = [x.strip() for x in text.split(",")]
        if any(x.lower() == "none" for x in items):
            rest = [x for x in items if x.lower() != "none"]
            return [None] + (parse_list(flag(field.name), ",".join(rest), kind) if rest else [])
    return parse_list(flag(field.name), text, kind)


def spec_from_args(args):
    """The checked ``rnnjax.study.StudySpec`` of the parsed flags (``CLIError`` naming the flag)."""
    from rnnjax import CELLS, study
    from rnnjax.tasks import TASKS, coerce_option
    from rnnjax.train import RunConfig

    if args.task not in TASKS:
        raise CLIError(f"--task: unknown task {args.task!r}; expected one of {', '.join(sorted(TASKS))}")
    fixed, axes = {}, {}
    for field, hint in _fields():
        if field.name in NOT_FOR_STUDIES:
            continue
        text = getattr(args, field.name)
        if text is None:
            continue
        values = _values(field, hint, str(text))
        if len(values) == 1:
            fixed[field.name] = values[0]
        else:
            axes[field.name] = values
    for name in axes.get("cell", [fixed.get("cell")]):
        if name not in CELLS:
            raise CLIError(f"--cell: unknown cell {name!r}; expected one of {', '.join(sorted(CELLS))} "
                           "(add your own with rnnjax.register_cell)")
    options = {}
    for item in args.task_option:
        if "=" not in item:
            raise CLIError(f"--task-option: expected KEY=VALUE[,VALUE...], got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        items = [x for x in raw.split(",")]
        try:
            values = [coerce_option(args.task, key, x) for x in items]
        except ValueError as err:
            raise CLIError(f"--task-option {str(err).splitlines()[0]}") from None
        if len(values) == 1:
            options[key] = values[0]
        else:
            axes[key] = values
    try:
        base = RunConfig(**fixed, task_options=tuple(sorted(options.items()))).validate()
    except ValueError as err:
        raise as_cli_error(err) from None
    seeds = parse_list("--seeds", args.seeds, int)
    kwargs = {"solved": args.solved} if args.solved is not None else {}
    try:
        return study.make_spec(base, axes, seeds, gradflow=not args.no_gradflow,
                               method="vmap" if args.vectorize else "map", **kwargs)
    except ValueError as err:
        message = str(err).splitlines()[0]
        head, _, rest = message.partition(": ")
        if head == "axes":
            inner, sep, tail = rest.partition(":")
            if sep and inner in {f.name for f in dataclasses.fields(RunConfig)}:
                raise CLIError(f"{flag(inner)}:{tail}") from None
            raise CLIError(rest) from None
        if head in ("solved", "seeds"):
            raise CLIError(f"--{head}: {rest}") from None
        raise CLIError(message) from None


def study_command(args) -> int:
    """Handler of ``rnnjax study``."""
    import os

    from rnnjax import study
    from rnnjax.rundir import DirectoryBusy

    spec = spec_from_args(args)
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out: {out} exists and is not a directory")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    configurations = spec.configurations()
    log(f"study: {len(configurations)} configurations x {len(spec.seeds)} seeds ({spec.base.task}, "
        f"{spec.base.steps} steps each)")
    try:
        result = study.run_study(spec.base, dict(spec.axes), spec.seeds, out=out, solved=spec.solved,
                                 gradflow=spec.gradflow, method=spec.method, log=log)
    except DirectoryBusy as err:
        raise CLIError(f"--out: {err}") from None
    except ValueError as err:
        message = str(err).splitlines()[0]
        if message.startswith("out: "):
            raise CLIError("--" + message) from None
        raise CLIError(message) from None
    sys.stdout.write(study.to_markdown(result))
    failed = [g for g in result.groups if g["status"] != "completed"]
    print(f"wrote {os.path.join(out, study.STUDY_FILE)}, study.csv, study_runs.csv, study.md and figures "
          f"({result.timing['total_s']:.1f} s; {len(result.groups)} groups"
          + (f", {len(failed)} failed: {failed[0]['error']}" if failed else "") + ")")
    return 1 if failed else 0


__all__ = ["register", "spec_from_args", "study_command"]
