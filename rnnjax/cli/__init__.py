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

COMMAND_MODULES = ("demo", "train", "gradflow", "bench", "sweep")


class CLIError(Exception):
    """An error in the user's input: printed as one line, exit code 2."""


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
    if argv is None and os.environ.get("RNNJAX_ALLOCATOR", "tuned") == "tuned":
        # A command-line process owns its allocator: keep large freed buffers rather than
        # page-faulting them back every step (see rnnjax.tune_allocator; RNNJAX_ALLOCATOR=default to skip).
        from rnnjax._allocator import tune_allocator

        tune_allocator()
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"rnnjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnjax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
