"""``rnnjax bench``: run the benchmark suite (training step, compile time, memory) and write its tables.

The suite lives in the repository's ``benchmarks/`` folder (``train_step.py``,
``compile_time.py``, ``memory.py``, ``parallel_scan.py`` — sequential against
associative scan and DEER); this command runs them in one process
with the same settings for every implementation compared: the glibc
allocator tuned at run time (``--allocator tuned``, the default; see
``benchmarks/common.py``) and one JAX CPU host device per core
(``--host-devices``), so the data-parallel ``rnnjax-dp`` row can use all
cores. Each benchmark writes ``NAME.json`` and ``NAME.md`` to ``--out``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from rnnjax.cli import CLIError

SUITE = ("train_step", "compile_time", "memory", "parallel_scan")
# Benchmarks driven through their own command line (``main(argv)``): name -> (full argv, quick argv).
_MAIN_ARGS = {"parallel_scan": ([], ["--lengths", "100", "1000", "--repeats", "3"])}


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


def _load(directory: str, name: str):
    if directory not in sys.path:
        sys.path.insert(0, directory)  # the scripts import their sibling ``common``
    spec = importlib.util.spec_from_file_location(f"rnnjax_bench_{name}", os.path.join(directory, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


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
    common = _load(directory, "common")
    settings = common.apply_settings(allocator=args.allocator, host_devices=args.host_devices)
    out = common.out_dir(args.out)
    command = ["rnnjax", "bench", *(["--quick"] if args.quick else []), "--out", args.out]
    if list(args.only) != list(SUITE):
        command += ["--only", *args.only]
    if args.allocator != "tuned":
        command += ["--allocator", args.allocator]
    for name in args.only:
        if not os.path.isfile(os.path.join(directory, f"{name}.py")):
            raise CLIError(f"--only: benchmarks/{name}.py is missing from {directory}")
        module = _load(directory, name)
        print(f"== {name}", flush=True)
        if name in _MAIN_ARGS:
            full, quick = _MAIN_ARGS[name]
            module.main([*(quick if args.quick else full), "--out", out])
            continue
        config = module.Config()
        if name == "train_step" and args.no_torch:
            config = type(config)(**{**vars(config), "torch": False})
        module.run(config, args.quick, out, settings, command)
    print(f"results in {out}", flush=True)
    return 0
