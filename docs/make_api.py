"""Write docs/api.md, the API reference, from the docstrings.

    python docs/make_api.py            # (re)writes docs/api.md
    python docs/make_api.py --check    # exit 1 if docs/api.md differs from what would be written

It covers every name in ``rnnjax.__all__`` and, for every public submodule (those
``rnnjax.__all__`` re-exports plus ``EXTRA_MODULES``), the names in the module's
``__all__`` (without one: the public functions and classes defined in it). Each
entry is the signature, the docstring's first paragraph and its ``Args``,
``Returns`` and ``Attributes`` sections. An object is documented once, under its
first name; later names of it are listed as aliases. tests/test_readme.py checks
that the committed docs/api.md is up to date.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pathlib
import re
import sys
import types

OUT = pathlib.Path(__file__).resolve().parent / "api.md"
# Public submodules that rnnjax/__init__.py does not re-export (import them by their full name).
EXTRA_MODULES = ("rnnjax.bptt", "rnnjax.allocator")
SECTIONS = ("Args", "Returns", "Attributes")


def _rst_to_md(text: str) -> str:
    """``code`` (reStructuredText) -> `code` (Markdown)."""
    return re.sub(r"``(.+?)``", r"`\1`", text)


def _signature(obj) -> str:
    """``(a, b=1, *, c=None)`` without annotations and without memory addresses; '' if there is none."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    text = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    text = re.sub(r"<class '(?:[\w.]*\.)?(\w+)'>", r"\1", text)
    text = re.sub(r"<(?:[\w.]+ of )?<function ([\w.<>]+) at 0x[0-9a-f]+>>|<function ([\w.<>]+) at 0x[0-9a-f]+>",
                  lambda m: m.group(1) or m.group(2), text)
    return re.sub(r" at 0x[0-9a-f]+", "", text)


def _section(doc: str, name: str) -> list[str]:
    """The items of a Google-style section (``Args:``) as Markdown bullets (``Returns:`` as one paragraph)."""
    lines = doc.splitlines()
    try:
        start = lines.index(f"{name}:")
    except ValueError:
        return []
    body = []
    for line in lines[start + 1:]:
        if line.strip() and not line.startswith((" ", "\t")):
            break
        body.append(line)
    indents = [len(x) - len(x.lstrip()) for x in body if x.strip()]
    if not indents:
        return []
    base = min(indents)
    items: list[str] = []
    for line in body:
        if not line.strip():
            continue
        if len(line) - len(line.lstrip()) == base and (name == "Returns" and not items or name != "Returns"):
            items.append(line.strip())
        else:
            items[-1] += " " + line.strip()
    if name == "Returns":
        return [f"**Returns:** {_rst_to_md(' '.join(items))}", ""]
    bullets = []
    for item in items:
        key, sep, rest = item.partition(":")
        bullets.append(f"- `{key.strip()}`{sep}{_rst_to_md(rest)}" if sep and " " not in key.strip() else
                       f"- {_rst_to_md(item)}")
    return [f"**{name}:**", "", *bullets, ""]


def _entry(qualname: str, obj) -> list[str]:
    """Markdown for one documented name."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj) or callable(obj)):
        kind = type(obj).__name__
        keys = f" with keys {', '.join(f'`{k}`' for k in obj)}" if isinstance(obj, dict) else ""
        return [f"### `{qualname}`", "", f"A `{kind}`{keys}.", ""]
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n", 1)[0].strip() if doc else "(no docstring)"
    lines = [f"### `{qualname}{_signature(obj)}`", "", _rst_to_md(" ".join(first.split())), ""]
    for name in SECTIONS:
        lines += _section(doc, name)
    return lines


def _public_names(module) -> list[str]:
    """``module.__all__``, or its public functions and classes defined in it (alphabetical)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted((n for n, o in vars(module).items()
                   if not n.startswith("_") and (inspect.isfunction(o) or inspect.isclass(o))
                   and o.__module__ == module.__name__), key=str.lower)


def render() -> str:
    """The text of docs/api.md."""
    import rnnjax

    seen: dict[int, str] = {}
    out = ["# API reference", "", "[← README](../README.md) · generated from the docstrings by "
           "`python docs/make_api.py` (do not edit by hand)", ""]
    modules = [getattr(rnnjax, n) for n in rnnjax.__all__ if isinstance(getattr(rnnjax, n), types.ModuleType)]
    for extra in EXTRA_MODULES:
        try:
            modules.append(importlib.import_module(extra))
        except ModuleNotFoundError as err:
            if err.name != extra:
                raise
    toc = ["`rnnjax`"] + [f"[`{m.__name__}`](#{m.__name__.replace('.', '')})" for m in modules]
    out += ["Modules: " + " · ".join(toc), ""]
    for module in [rnnjax, *modules]:
        doc = inspect.getdoc(module) or ""
        out += [f"## `{module.__name__}`", "", _rst_to_md(" ".join(doc.split("\n\n", 1)[0].split())), ""]
        aliases = []
        for name in _public_names(module):
            obj = getattr(module, name)
            qualname = f"{module.__name__}.{name}"
            if isinstance(obj, types.ModuleType):
                continue
            if id(obj) in seen and (callable(obj) or isinstance(obj, dict)):
                aliases.append(f"`{name}` = `{seen[id(obj)]}`")
                continue
            seen[id(obj)] = qualname
            out += _entry(qualname, obj)
        if aliases:
            out += ["Also here: " + ", ".join(aliases) + ".", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is not up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python docs/make_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
