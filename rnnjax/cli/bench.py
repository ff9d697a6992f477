"""``rnnjax bench``: run the benchmark suite (training step, compile time, memory) and write its tables.

The suite lives in the repository's ``benchmarks/`` folder (``train_step.py``,
``compile_time.py``, ``memory.py``, ``parallel_scan.py`` — sequential against
associative scan and DEER); this command runs each script as its own program
(``python benchmarks/NAME.py ...``, a fresh process apiece) with the same
settings for every implementation it compares: the glibc allocator tuned at
run time (``--allocator tuned``, the default; see ``benchmarks/common.py``) and
one JAX CPU host device per core (``--host-devices``), so the data-parallel
``rnnjax-dp`` row can use all cores. Each benchmark writes ``NAME.json`` and
``NAME.md`` to ``--out``, with the command that reproduces it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from rnnjax.cli import CLIError

SUITE = ("train_step", "compile_time", "memory", "parallel_scan")


def _benchmarks_dir() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [
        os.environ.get("RNNJAX_BENCHMARKS", ""),
        os.path.join(here, "..", "..", "benchmarks"),
        os.path.join(os.getcwd(), "benchmarks"),
    ]
    for path in candidates:
        if path and os.path.isfile(os.path.join(path, "common.py")):
            return os.path.abspath(path)
    raise CLIError(
        "cannot find the benchmarks/ folder (run from a source checkout, e.g. `pip install -e .`, "
        "or set RNNJAX_BENCHMARKS=/path/to/benchmarks)"
    )


def script_argv(name: str, args) -> list[str]:
    """The flags of ``benchmarks/NAME.py``'s own command line that carry this command's settings."""
    quick = ["--quick"] if args.quick else []
    argv = {
        "train_step": [*quick, "--allocator", args.allocator, *(["--no-torch"] if args.no_torch else []),
                       *(["--host-devices", str(args.host_devices)] if args.host_devices is not None else [])],
        "compile_time": [*quick, "--allocator", args.allocator],
        "memory": quick,  # buffer sizes from XLA: no allocator or device setting applies
        "parallel_scan": ["--lengths", "100", "1000", "--repeats", "3"] if args.quick else [],
    }[name]
    return [*argv, "--out", os.path.abspath(args.out)]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark training step, compile time and memory against Flax and PyTorch",
        description=__doc__,
    )
    parser.add_argument("--quick", action="store_true", help="a small version of each benchmark (minutes)")
    parser.add_argument("--out", required=True, help="output folder for the JSON and markdown tables")
    parser.add_argument(
        "--only", nargs="+", choices=SUITE, default=list(SUITE), help="run only these benchmarks (default: all)"
    )
    parser.add_argument(
        "--allocator",
        choices=("tuned", "default"),
        default="tuned",
        help="tune glibc malloc at run time for every implementation alike (default) or leave it",
    )
    parser.add_argument(
        "--host-devices",
        type=int,
        default=os.cpu_count(),
        help="JAX CPU host devices (one thread each) for the data-parallel row; default: the core count",
    )
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.set_defaults(func=handle)


def handle(args) -> int:
    if args.host_devices is not None and args.host_devices < 1:
        raise CLIError(f"--host-devices: expected a positive integer, got {args.host_devices}")
    directory = _benchmarks_dir()
    for name in args.only:
        if not os.path.isfile(os.path.join(directory, f"{name}.py")):
            raise CLIError(f"--only: benchmarks/{name}.py is missing from {directory}")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        raise CLIError(f"--out: cannot create {args.out}: {err.strerror}") from None
    for name in args.only:
        print(f"== {name}", flush=True)
        code = subprocess.run([sys.executable, os.path.join(directory, f"{name}.py"), *script_argv(name, args)]).returncode
        if code:
            print(f"rnnjax bench: benchmarks/{name}.py failed (exit code {code})", file=sys.stderr)
            return code
    print(f"results in {args.out}", flush=True)
    return 0
