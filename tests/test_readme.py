"""The README's promises: its Python examples run as written, and CI runs its test command."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks():
    """Every ```python block, except one right after a ``<!-- fragment ... -->`` comment."""
    blocks = re.findall(r"(<!-- fragment[^>]*-->\s*)?```python\n(.*?)```", README, flags=re.S)
    return [code for marker, code in blocks if not marker]


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_blocks_run(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _python_blocks()[index]
    exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "__readme__"})


def test_ci_runs_exactly_the_readme_test_command():
    bash_blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    setup = bash_blocks[0].splitlines()
    test_cmd = [line for line in setup if "pytest" in line]
    assert len(test_cmd) == 1, "README set-up must have exactly one test command"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd[0].strip() in [line.strip() for line in ci]
    assert "exit 1" in (ROOT / ".ci" / "run").read_text()  # pytest exit 5 is handled as failure
