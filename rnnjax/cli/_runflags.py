"""The flags of a training run, generated from ``rnnjax.train.RunConfig`` (its one definition).

``add_run_arguments`` adds one flag per ``RunConfig`` field (``batch_size`` ->
``--batch-size``, type and help from the field), plus ``--task-option
KEY=VALUE`` and ``--text FILE``; ``config_from_args`` turns the parsed
namespace back into a validated ``RunConfig``, with every error named by its
flag. ``rnnjax train`` uses all fields; ``rnnjax sweep`` replaces the swept
ones by comma-separated lists.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing

from rnnjax.cli import CLIError

REQUIRED = ("task", "cell")
_SPECIAL = ("task_options",)  # not a plain flag: --task-option KEY=VALUE (repeatable) and --text FILE


def flag(name: str) -> str:
    """``"batch_size"`` -> ``"--batch-size"``."""
    return "--" + name.replace("_", "-")


def _fields():
    from rnnjax.train import RunConfig

    hints = typing.get_type_hints(RunConfig)
    return [(f, hints[f.name]) for f in dataclasses.fields(RunConfig) if f.name not in _SPECIAL]


def _scalar_type(hint):
    """``int | None`` -> ``int``; plain types unchanged."""
    if isinstance(hint, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def add_run_arguments(parser: argparse.ArgumentParser, *, exclude: tuple = (), defaults: dict | None = None) -> None:
    """Add a flag for every ``RunConfig`` field not in ``exclude`` (and ``--task-option``, ``--text``).

    Args:
      parser: the command's parser.
      exclude: field names the command defines itself (a sweep's lists).
      defaults: field -> default overriding ``RunConfig``'s (shown in the help).
    """
    defaults = defaults or {}
    for field, hint in _fields():
        if field.name in exclude:
            continue
        default = defaults.get(field.name, field.default)
        text = field.metadata["help"]
        kind = _scalar_type(hint)
        if kind is bool:
            parser.add_argument(flag(field.name), action="store_true", default=default, help=text)
            continue
        if field.name in REQUIRED:
            parser.add_argument(flag(field.name), required=True, help=text)
            continue
        shown = "" if default is None else f" (default {default:g})" if isinstance(default, float) else \
            f" (default {default})"
        parser.add_argument(flag(field.name), type=kind, default=default, metavar=field.metadata["metavar"],
                            help=text + shown)
    parser.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                        help="task option, parsed by its declared type (booleans: true/false/1/0/yes/no); repeatable")
    parser.add_argument("--text", default=None, metavar="FILE", help="text file for the charlm task "
                        "(default: Shakespeare)")


def task_options(task: str, items: list[str], text: str | None) -> tuple:
    """``--task-option KEY=VALUE`` items (and ``--text``) as sorted, typed ``(key, value)`` pairs."""
    from rnnjax.tasks import TASKS, coerce_option

    if task not in TASKS:
        raise CLIError(f"--task: unknown task {task!r}; expected one of {', '.join(sorted(TASKS))}")
    options = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"--task-option: expected KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            options[key] = coerce_option(task, key, raw)
        except ValueError as err:
            raise CLIError(f"--task-option {str(err).splitlines()[0]}") from None
    if text is not None:
        if not os.path.isfile(text):
            raise CLIError(f"--text: no such file {text!r}")
        try:
            options["text_file"] = coerce_option(task, "text_file", os.path.abspath(text))
        except ValueError:
            raise CLIError(f"--text: task {task!r} reads no text file") from None
    return tuple(sorted(options.items()))


def as_cli_error(err: ValueError) -> CLIError:
    """A ``RunConfig``/library ``ValueError`` (``"field: ..."``) as a ``CLIError`` naming the flag."""
    from rnnjax.train import RunConfig

    message = str(err).splitlines()[0]
    name, sep, rest = message.partition(":")
    if sep and name in {f.name for f in dataclasses.fields(RunConfig)}:
        return CLIError(f"{flag(name)}:{rest}")
    return CLIError(message)


def config_from_args(args: argparse.Namespace, **overrides):
    """The validated ``RunConfig`` of the parsed flags (``overrides`` replace fields, e.g. one run of a sweep).

    Raises:
      CLIError: naming the flag whose value is invalid, an unknown task or cell.
    """
    from rnnjax import CELLS
    from rnnjax.train import RunConfig

    values = {f.name: getattr(args, f.name) for f, _ in _fields() if hasattr(args, f.name)}
    values.update(overrides)
    values["task_options"] = task_options(values["task"], args.task_option, args.text)
    if values["cell"] not in CELLS:
        raise CLIError(f"--cell: unknown cell {values['cell']!r}; expected one of {', '.join(sorted(CELLS))} "
                       "(add your own with rnnjax.register_cell)")
    try:
        return RunConfig(**values).validate()
    except ValueError as err:
        raise as_cli_error(err) from None


def run_argv(config, *, out: str) -> list[str]:
    """The ``rnnjax train`` arguments that reproduce ``config`` (``RunConfig.train_argv``)."""
    return config.train_argv(out)
