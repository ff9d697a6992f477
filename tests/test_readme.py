"""The documentation's promises: README.md and docs/*.md run as written, and CI runs the README's test command.

Every ```python block runs (except one right after a ``<!-- fragment ... -->`` comment); every
``rnnjax ...`` command in a ```bash block parses with the real command-line parser, so a removed or
renamed flag fails here, and every ``python x.py`` names an existing file; relative links resolve;
docs/api.md is what docs/make_api.py generates.
"""

import importlib.util
import pathlib
import re
import shlex

import pytest

import rnnjax
from rnnjax.cli import build_parser

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(lang):
    """``(path, line, code, fragment)`` of every ```lang block; ``fragment``: a ``<!-- fragment -->`` precedes it."""
    found = []
    for path in PAGES:
        text = path.read_text()
        for m in re.finditer(rf"(<!-- fragment[^>]*-->\s*)?```{lang}\n(.*?)```", text, flags=re.S):
            line = text.count("\n", 0, m.start(2)) + 1
            found.append((path.relative_to(ROOT), line, m.group(2), bool(m.group(1))))
    return found


def _python_blocks():
    return [pytest.param(code, id=f"{path}:{line}") for path, line, code, fragment in _blocks("python") if not fragment]


def _shell_words(line):
    """Words of one shell line, comments dropped; ``&&``, ``||``, ``;`` and ``|`` are words of their own."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    return list(lexer)


def _shell_commands():
    """Every command of the ```bash blocks (continuation lines joined), as ``(id, argv)``."""
    commands = []
    for path, line, code, _ in _blocks("bash"):
        pending = ""
        for i, text in enumerate(code.split("\n")):
            if text.endswith("\\"):  # a continuation line
                pending += text[:-1] + " "
                continue
            text, pending = pending + text, ""
            segment = []
            for word in _shell_words(text) + [";"]:
                if word not in (";", "&&", "||", "|"):
                    segment.append(word)
                    continue
                while segment and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", segment[0]):  # FOO=1 rnnjax ...
                    segment.pop(0)
                if segment:
                    commands.append((f"{path}:{line + i}", segment))
                segment = []
    return commands


def _rnnjax_commands():
    return [pytest.param(argv[1:], id=where) for where, argv in _shell_commands() if argv[0] == "rnnjax"]


def test_documentation_is_found():
    assert len(PAGES) > 5, "docs/*.md pages are missing"
    assert len(_python_blocks()) >= 5 and len(_rnnjax_commands()) >= 10


@pytest.mark.parametrize("code", _python_blocks())
def test_python_blocks_run(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cells = dict(rnnjax.CELLS)
    try:
        exec(compile(code, "<documentation block>", "exec"), {"__name__": "__docs__"})
    finally:  # undo a cell the example registered (rnnjax.register_cell), for the tests that run after it
        rnnjax.CELLS.clear()
        rnnjax.CELLS.update(cells)


@pytest.mark.parametrize("argv", _rnnjax_commands())
def test_rnnjax_commands_parse(argv, capsys):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"rnnjax {' '.join(argv)}: rejected by the parser: {capsys.readouterr().err.strip()}")
    assert getattr(args, "func", None), f"rnnjax {' '.join(argv)}: no command"


def test_python_commands_name_existing_files():
    """``python experiments/x.py ...``, ``python -m pytest tests/test_x.py``: the scripts and test files exist."""
    missing = [f"{where}: {word}" for where, argv in _shell_commands() if argv[0] == "python"
               for word in argv[1:] if word.endswith(".py") and not (ROOT / word.split("::")[0]).exists()]
    assert not missing, missing


def test_command_parsing_catches_unknown_flags(capsys):
    """The check above is real: a flag the parser lacks is rejected."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--task", "adding", "--cell", "lstm", "--out", "x", "--no-such-flag"])
    assert _shell_words("A=1 rnnjax demo --out 'a b' && echo # x") == ["A=1", "rnnjax", "demo", "--out", "a b",
                                                                       "&&", "echo"]


def test_relative_links_resolve():
    missing = []
    for path in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if not re.match(r"[a-z]+://", target) and not (path.parent / target).exists():
                missing.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_api_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("make_api", ROOT / "docs" / "make_api.py")
    make_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_api)
    assert (ROOT / "docs" / "api.md").read_text() == make_api.render(), \
        "docs/api.md is out of date: run python docs/make_api.py"


def test_ci_runs_exactly_the_readme_test_command():
    bash_blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    setup = bash_blocks[0].splitlines()
    test_cmd = [line for line in setup if "pytest" in line]
    assert len(test_cmd) == 1, "README set-up must have exactly one test command"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd[0].strip() in [line.strip() for line in ci]
    assert "exit 1" in (ROOT / ".ci" / "run").read_text()  # pytest exit 5 is handled as failure
