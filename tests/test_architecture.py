"""The package's layers: every import points down (docs/architecture.md mirrors the tables here).

Every module of ``rnnjax`` is parsed with ``ast`` (nothing is imported to find
the imports, function-local imports included) and each ``import`` of an
``rnnjax`` module is checked against ``LAYERS``: a module may import its own
layer and the layers its row names, nothing above.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rnnjax"
DOC = ROOT / "docs" / "architecture.md"

# layer -> (what it owns, the layers below it that it may import). Lowest first.
LAYERS = {
    "core": ("cells, unrolling, layers, initialisers, the cell registry, numeric kernels, shared types and "
             "utilities; a test oracle and process plumbing as submodules", ()),
    "data": ("tasks: batches from explicit keys or installed datasets", ("core",)),
    "diagnostics": ("gradient flow through time", ("core",)),
    "interop": ("conversion to and from Flax and PyTorch", ("core",)),
    "models": ("readouts, losses, evaluation and generation around cells", ("core", "data", "diagnostics")),
    "training": ("the training run as one pure function; checkpoints, run directories, metrics writers",
                 ("core", "data", "diagnostics", "models")),
    "scale-out": ("data parallelism over devices and hosts; vectorised sweeps",
                  ("core", "data", "diagnostics", "models", "training")),
    "api": ("the public namespace ``rnnjax.*``", ("core", "data", "diagnostics", "interop", "models", "training",
                                                 "scale-out")),
    "cli": ("the ``rnnjax`` command line", ("core", "data", "diagnostics", "interop", "models", "training",
                                            "scale-out", "api")),
}

# module (a package stands for all its submodules) -> layer. A new module needs a row here and in docs/architecture.md.
MODULES = {
    "rnnjax._batch": "core",
    "rnnjax._carry": "core",
    "rnnjax._cells": "core",
    "rnnjax._cudnn": "core",
    "rnnjax._deer": "core",
    "rnnjax._fastgrad": "core",
    "rnnjax._layers": "core",
    "rnnjax._longmemory": "core",
    "rnnjax._modern": "core",
    "rnnjax._parallel": "core",
    "rnnjax._registry": "core",
    "rnnjax._shard_map": "core",
    "rnnjax._unroll": "core",
    "rnnjax._validate": "core",
    "rnnjax.allocator": "core",
    "rnnjax.bptt": "core",
    "rnnjax.initializers": "core",
    "rnnjax.tasks": "data",
    "rnnjax.gradflow": "diagnostics",
    "rnnjax.dynamics": "diagnostics",
    "rnnjax.interop": "interop",
    "rnnjax.models": "models",
    "rnnjax.checkpoint": "training",
    "rnnjax.rundir": "training",
    "rnnjax.train": "training",
    "rnnjax.writers": "training",
    "rnnjax.distributed": "scale-out",
    "rnnjax.sweep": "scale-out",
    "rnnjax.study": "scale-out",
    "rnnjax.search": "scale-out",
    "rnnjax": "api",
    "rnnjax.__main__": "cli",
    "rnnjax.cli": "cli",
}

# Shared names -> the module named for them, the only one anything may import them from.
SHARED = {
    "Batch": "rnnjax._batch",
    "PATTERNS": "rnnjax._batch",
    "carry_size": "rnnjax._carry",
    "flatten_carry": "rnnjax._carry",
    "match_varying": "rnnjax._shard_map",
    "varying_axes": "rnnjax._shard_map",
}


# ------------------------------------------------------------------------------------------ the checker
def package_sources() -> dict[str, str]:
    """Module name -> source of every ``.py`` file under ``rnnjax/``."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path.read_text()
    return out


SOURCES = package_sources()


def layer_of(module: str) -> str | None:
    """The layer of ``module``: its own row, else its package's (``rnnjax`` itself only by its own row)."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        if ".".join(parts[:n]) in MODULES:
            return MODULES[".".join(parts[:n])]
    return MODULES.get(module)


def imports(module: str, source: str, modules=SOURCES) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(line, imported module, names)`` for every import in ``source`` (function-local ones too).

    ``from rnnjax import _validate`` imports the module ``rnnjax._validate``; ``from rnnjax import CELLS`` the
    package ``rnnjax``. Relative imports are resolved against ``module``'s package.
    """
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub, ()) if sub in modules else (node.lineno, base, (alias.name,)))
    return found


def _is_package(module: str) -> bool:
    return (ROOT / module.replace(".", "/") / "__init__.py").is_file()


def violations(module: str, source: str, modules=SOURCES) -> list[str]:
    """Every import in ``module`` that points up, sideways, into ``rnnjax.cli`` or into another package's privates."""
    layer = layer_of(module)
    allowed = {layer, *LAYERS[layer][1]}
    found = []
    for line, target, names in imports(module, source, modules):
        if target != "rnnjax" and not target.startswith("rnnjax."):
            continue
        where = f"{module} (line {line}) imports {target}"
        target_layer = layer_of(target)
        if target_layer is None:
            found.append(f"{where}, a module missing from MODULES")
        elif layer != "cli" and target_layer == "cli":
            found.append(f"{where}: only the command line may import rnnjax.cli")
        elif target_layer not in allowed:
            found.append(f"{where}: layer {layer!r} may import {sorted(allowed)}, not {target_layer!r}")
        parts = target.split(".")
        private = next((i for i, part in enumerate(parts) if part.startswith("_") and not part.endswith("__")), None)
        owner = ".".join(parts[:private]) if private is not None else None
        if owner is not None and module != owner and not module.startswith(owner + "."):
            found.append(f"{where}: a private module of {owner}, for {owner}'s own modules only")
        for name in names:
            if name in SHARED and target != SHARED[name]:
                found.append(f"{where}: {name} belongs to {SHARED[name]}; import it from there")
    return found


# ------------------------------------------------------------------------------------------ the package
def test_every_module_has_a_layer():
    unknown = [m for m in SOURCES if layer_of(m) is None]
    assert not unknown, (
        f"modules without a layer: {unknown}; add each to MODULES in tests/test_architecture.py (one of "
        f"{list(LAYERS)}) and its row to docs/architecture.md"
    )


def test_every_import_points_down():
    found = [v for module, source in SOURCES.items() if layer_of(module) for v in violations(module, source)]
    assert not found, "imports against the layers (tests/test_architecture.py, docs/architecture.md):\n" + "\n".join(found)


def test_layer_table_points_down():
    order = list(LAYERS)
    for layer, (_, below) in LAYERS.items():
        assert all(order.index(b) < order.index(layer) for b in below), layer
        assert set(MODULES.values()) <= set(LAYERS)


# The defects this table was written against, as they were: each must be reported, naming both modules.
@pytest.mark.parametrize("module,source,expected", [
    ("rnnjax.distributed", "def f():\n    from rnnjax.cli import CLIError\n",
     "rnnjax.distributed (line 2) imports rnnjax.cli: only the command line may import rnnjax.cli"),
    ("rnnjax._deer", "from rnnjax.gradflow import flatten_carry\n",
     "rnnjax._deer (line 1) imports rnnjax.gradflow: layer 'core' may import ['core'], not 'diagnostics'"),
    ("rnnjax.models", "from rnnjax.gradflow import flatten_carry\n",
     "rnnjax.models (line 1) imports rnnjax.gradflow: flatten_carry belongs to rnnjax._carry; import it from there"),
    ("rnnjax.models", "from rnnjax.tasks._base import Batch\n",
     "rnnjax.models (line 1) imports rnnjax.tasks._base: a private module of rnnjax.tasks, for rnnjax.tasks's own "
     "modules only"),
    ("rnnjax._unroll", "from rnnjax._fastgrad import varying_axes\n",
     "rnnjax._unroll (line 1) imports rnnjax._fastgrad: varying_axes belongs to rnnjax._shard_map; import it from there"),
    ("rnnjax.models", "import rnnjax\n",
     "rnnjax.models (line 1) imports rnnjax: layer 'models' may import ['core', 'data', 'diagnostics', 'models'], "
     "not 'api'"),
    ("rnnjax.tasks._text", "from .. import train\n",
     "rnnjax.tasks._text (line 1) imports rnnjax.train: layer 'data' may import ['core', 'data'], not 'training'"),
])
def test_checker_reports_the_old_defects(module, source, expected):
    assert expected in violations(module, source)


def test_checker_allows_downward_and_own_package_imports():
    assert violations("rnnjax.tasks._text", "from rnnjax.tasks._synthetic import check_positive_int\n") == []
    assert violations("rnnjax.cli.train", "from rnnjax.cli import CLIError\nimport rnnjax\n") == []
    assert violations("rnnjax.sweep", "def f():\n    from rnnjax.train import build\n") == []


_PATH_LOADERS = {"spec_from_file_location", "module_from_spec", "exec_module", "SourceFileLoader", "run_path",
                 "exec", "__import__"}


def test_no_module_loads_code_by_file_path():
    found = [
        f"{module} (line {node.lineno}): {name}"
        for module, source in SOURCES.items()
        for node in ast.walk(ast.parse(source))
        for name in [node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)]
        if name in _PATH_LOADERS
    ]
    assert not found, found


def test_bench_runs_each_script_as_a_program(tmp_path, monkeypatch):
    """``rnnjax bench`` starts ``python benchmarks/NAME.py FLAGS`` with flags each script's own parser defines."""
    from rnnjax.cli import bench, main

    calls = []
    monkeypatch.setattr(bench.subprocess, "run", lambda argv: calls.append(argv) or argparse.Namespace(returncode=0))
    out = str(tmp_path / "out")
    assert main(["bench", "--quick", "--no-torch", "--allocator", "default", "--host-devices", "2", "--out", out]) == 0
    assert [pathlib.Path(c[1]).name for c in calls] == [f"{name}.py" for name in bench.SUITE]
    for argv in calls:
        assert argv[0] == sys.executable and pathlib.Path(argv[1]).parent == ROOT / "benchmarks"
        assert argv[-2:] == ["--out", out]
        tree = ast.parse(pathlib.Path(argv[1]).read_text())
        defined = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
                   and getattr(n.func, "attr", None) == "add_argument" and n.args and isinstance(n.args[0], ast.Constant)}
        assert {a for a in argv[2:] if a.startswith("--")} <= defined, (argv[1], defined)
    assert calls[0][2:-2] == ["--quick", "--allocator", "default", "--no-torch", "--host-devices", "2"]
    monkeypatch.setattr(bench.subprocess, "run", lambda argv: argparse.Namespace(returncode=3))
    assert main(["bench", "--only", "memory", "--out", out]) == 3


def test_top_level_namespace_has_no_test_oracle_or_plumbing():
    import rnnjax
    import rnnjax.allocator
    import rnnjax.bptt

    for name in ("bptt", "tune_allocator", "GLIBC_TUNABLES"):
        assert name not in rnnjax.__all__
    top = [t for _, t, names in imports("rnnjax", SOURCES["rnnjax"]) for t in [t, *(f"{t}.{n}" for n in names)]]
    assert "rnnjax.bptt" not in top and "rnnjax.allocator" not in top
    assert callable(rnnjax.bptt.elman_bptt) and callable(rnnjax.allocator.tune_allocator)
    assert rnnjax.allocator.GLIBC_TUNABLES.startswith("glibc.malloc.")


def _top_level_definitions(source: str) -> set[str]:
    tree = ast.parse(source)
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return names | {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}


def test_shared_names_live_in_the_modules_named_for_them():
    for name, home in SHARED.items():
        assert [m for m, s in SOURCES.items() if name in _top_level_definitions(s)] == [home], name
    import rnnjax._batch
    import rnnjax._carry
    import rnnjax.gradflow
    import rnnjax.tasks

    assert rnnjax.gradflow.flatten_carry is rnnjax._carry.flatten_carry  # re-exported: documented there
    assert rnnjax.tasks.Batch is rnnjax._batch.Batch and rnnjax.tasks.PATTERNS is rnnjax._batch.PATTERNS


def test_docs_mirror_the_tables():
    """docs/architecture.md has one row per module: its layer and the layers it may import, as in MODULES/LAYERS."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in DOC.read_text().splitlines()
            if line.startswith("| `rnnjax")]
    doc = {module.strip("`"): (layer, set(re.findall(r"[a-z][\w-]*", below))) for module, layer, _, below in rows}
    want = {module: (layer, set(LAYERS[layer][1])) for module, layer in MODULES.items()}
    assert doc == want, (
        "docs/architecture.md's table differs from MODULES/LAYERS in tests/test_architecture.py: "
        f"{sorted(set(doc.items()) ^ set(want.items()), key=str)}"
    )
