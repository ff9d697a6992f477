"""Compile time of an rnnjax training step against sequence length T and against ``unroll``.

The step is ``jax.value_and_grad`` of ``mean(ys ** 2)`` through
``jax.vmap(rnnjax.unroll)`` (LSTM, float32). ``lax.scan`` compiles one loop
body whatever T is, so compile time should be flat in T and grow with
``unroll`` (the body is copied ``unroll`` times). Lowering (tracing to
StableHLO) and XLA compilation are timed separately, each in a fresh
``jax.jit`` so no cache is hit, after one untimed compile (first-use costs);
the median over the repeats is reported.

Usage::

    python benchmarks/compile_time.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    cell: str = "lstm"
    batch: int = 32
    input_size: int = 32
    hidden: int = 128
    times: tuple = (100, 1000, 10000)
    unrolls: tuple = (1, 2, 4, 8)
    unroll_time: int = 1000
    backwards: tuple = ("fast", "autodiff")
    repeats: int = 3
    quick_repeats: int = 1


def _compile(config, time, unroll, backward):
    import jax
    import jax.numpy as jnp

    import rnnjax

    cell = rnnjax.make_cell(config.cell, config.input_size, config.hidden)
    params = cell.init(jax.random.key(0))
    xs = jax.ShapeDtypeStruct((config.batch, time, config.input_size), jnp.float32)

    def loss(params, xs):
        _, ys = jax.vmap(lambda x: rnnjax.unroll(cell, params, x, unroll=unroll, backward=backward))(xs)
        return jnp.mean(ys**2)

    compiled, lower_s, compile_s = common.compile_seconds(jax.value_and_grad(loss), params, xs)
    return lower_s, compile_s, compiled.as_text().count("\n")


def run(config: Config, quick: bool, out: str | None, settings: dict, command: list[str]) -> dict:
    repeats = config.quick_repeats if quick else config.repeats
    cases = [(t, 1) for t in config.times] + [(config.unroll_time, u) for u in config.unrolls if u != 1]
    results, rows = [], []
    _compile(config, config.times[0], 1, config.backwards[0])  # untimed: first-use costs of JAX and XLA
    for backward in config.backwards:
        base = None
        for time, unroll in cases:
            samples = [_compile(config, time, unroll, backward) for _ in range(repeats)]
            lower_s = statistics.median(s[0] for s in samples)
            compile_s = statistics.median(s[1] for s in samples)
            total = lower_s + compile_s
            hlo_lines = samples[0][2]
            if time == config.times[0] and unroll == 1:
                base = total
            results.append({"backward": backward, "time": time, "unroll": unroll, "lower_s": lower_s,
                            "compile_s": compile_s, "total_s": total, "vs_T100": total / base,
                            "optimized_hlo_lines": hlo_lines})
            rows.append([backward, time, unroll, lower_s, compile_s, total, total / base, hlo_lines])
            print(f"{backward} T={time} unroll={unroll}: lower {lower_s:.2f} s, compile {compile_s:.2f} s", flush=True)
    header = ["backward", "T", "unroll", "lower s", "compile s", "total s", f"/ T={config.times[0]}", "HLO lines"]
    markdown = (
        f"# Compile time of a training step ({config.cell}, B={config.batch}, I={config.input_size}, "
        f"H={config.hidden}, float32; median of {repeats})\n\n"
        + common.markdown_table(header, rows)
        + "\n`HLO lines`: size of the optimized program (`compiled.as_text()`), a load-independent proxy: "
        "the loop body is compiled once whatever T is.\n"
        + common.provenance(settings, command)
    )
    payload = {"benchmark": "compile_time", "quick": quick, "config": dataclasses.asdict(config),
               "settings": settings, "system": common.system_info(), "results": results}
    common.write_results(out, "compile_time", payload, markdown)
    return payload


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one sample per case")
    parser.add_argument("--out", default=None)
    parser.add_argument("--allocator", choices=("tuned", "default"), default="tuned")
    args = parser.parse_args(argv)
    settings = common.apply_settings(allocator=args.allocator)
    run(Config(), args.quick, args.out, settings, ["python", "benchmarks/compile_time.py", *(argv or sys.argv[1:])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
