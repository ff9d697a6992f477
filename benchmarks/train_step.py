"""Training-step throughput: rnnjax against Flax linen ``nn.RNN`` and PyTorch ``nn.LSTM/GRU/RNN``.

One training step = forward + backward of ``loss = mean(ys ** 2)`` over a
``(batch, time, input)`` float32 batch, gradients with respect to all
parameters (the optimizer update is left out: it is the same elementwise work
everywhere). Implementations, timed interleaved in one process:

- ``rnnjax``: ``jax.value_and_grad`` of ``jax.vmap(rnnjax.unroll)`` — what a
  user writes; the default fast backward (``backward="fast"``);
- ``rnnjax-autodiff``: the same with ``backward="autodiff"`` (plain autodiff of ``lax.scan``);
- ``rnnjax-cudnn``: ``jax.value_and_grad`` of ``rnnjax.unroll_batch(..., method="cudnn")``
  (cuDNN's fused LSTM through ``jax.experimental.rnn.lstm``), LSTM on a GPU backend only;
- ``rnnjax-dp``: ``rnnjax`` data-parallel over all JAX devices
  (``rnnjax.distributed.data_parallel``, batch sharded; on CPU one host device
  per core), only when there is more than one device and the batch divides;
- ``flax-<Cell>``: ``flax.linen.RNN`` with ``OptimizedLSTMCell``, ``LSTMCell``,
  ``GRUCell`` or ``SimpleCell``;
- ``torch``: ``torch.nn.LSTM/GRU/RNN`` (oneDNN on CPU, cuDNN on GPU), optional, with
  PyTorch's default thread count, and ``torch-1thread`` (CPU only).

Ratios ``/ torch`` and ``/ best flax`` divide by the fastest PyTorch row and the
fastest Flax row of the same shape.

Two settings, each one process with every implementation side by side:

- ``--setting plain``: the process a user writes — glibc's default allocator,
  JAX's one CPU device, no environment variables (``rnnjax-dp`` absent);
  writes ``train_step_plain.{json,md}``;
- ``--setting recommended`` (default): rnnjax's recommended CPU setting — the
  allocator tuned at start-up (``rnnjax.allocator.tune_allocator``, applied to
  every implementation in the process, PyTorch included) and one JAX host
  device per core (the ``rnnjax-dp`` row; ``rnnjax train --devices N``);
  writes ``train_step.{json,md}``.

Usage::

    python benchmarks/train_step.py [--setting plain|recommended] [--quick] [--out DIR]
        [--allocator tuned|default] [--host-devices N]

``--allocator``/``--host-devices`` override the setting's choice. Writes to
``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    # (cell, batch, time, input, hidden)
    shapes: tuple = (
        ("lstm", 32, 100, 32, 128),
        ("lstm", 32, 100, 32, 512),
        ("lstm", 1, 1000, 8, 64),
        ("lstm", 256, 50, 64, 256),
        ("gru", 32, 100, 32, 128),
        ("gru", 1, 1000, 8, 64),
        ("elman-tanh", 32, 100, 32, 128),
    )
    quick_shapes: tuple = (("lstm", 32, 100, 32, 128), ("gru", 32, 100, 32, 128))
    # Added on a GPU (the accelerator target: within 1.5x of cuDNN).
    gpu_shapes: tuple = (("lstm", 64, 512, 256, 256),)
    repeats: int = 15
    quick_repeats: int = 5
    warmup: int = 2
    torch: bool = True
    flax: bool = True
    seed: int = 0


# setting -> (allocator, host devices (None: JAX's default, one CPU device), result name)
SETTINGS = {
    "plain": ("default", None, "train_step_plain"),
    "recommended": ("tuned", os.cpu_count(), "train_step"),
}

FLAX_CELLS = {
    "lstm": ("OptimizedLSTMCell", "LSTMCell"),
    "gru": ("GRUCell",),
    "elman-tanh": ("SimpleCell",),
}
TORCH_MODULES = {"lstm": "LSTM", "gru": "GRU", "elman-tanh": "RNN"}
_TORCH_THREADS = None


def _rnnjax_steps(name, batch, time, inp, hidden, seed, settings):
    import jax
    import jax.numpy as jnp

    import rnnjax
    from rnnjax import distributed

    cell = rnnjax.make_cell(name, inp, hidden)
    params = cell.init(jax.random.key(seed))
    xs = jax.random.normal(jax.random.key(seed + 1), (batch, time, inp), jnp.float32)

    def make_loss(backward):
        def loss(params, xs):
            _, ys = jax.vmap(lambda x: rnnjax.unroll(cell, params, x, backward=backward))(xs)
            return jnp.mean(ys**2)

        return loss

    fns, compile_s, grads = {}, {}, {}
    for label, backward in (("rnnjax", "fast"), ("rnnjax-autodiff", "autodiff")):
        compiled, _, c_s = common.compile_seconds(jax.value_and_grad(make_loss(backward)), params, xs)
        fns[label] = lambda c=compiled: jax.block_until_ready(c(params, xs))
        compile_s[label] = c_s
        grads[label] = compiled(params, xs)
    if name == "lstm" and jax.default_backend() == "gpu":
        import warnings

        def cudnn_loss(params, xs):
            with warnings.catch_warnings():  # a fallback would time the scan under this label
                warnings.simplefilter("error", rnnjax.CudnnFallbackWarning)
                _, ys = rnnjax.unroll_batch(cell, params, xs, method="cudnn")
            return jnp.mean(ys**2)

        compiled, _, c_s = common.compile_seconds(jax.value_and_grad(cudnn_loss), params, xs)
        fns["rnnjax-cudnn"] = lambda c=compiled: jax.block_until_ready(c(params, xs))
        compile_s["rnnjax-cudnn"] = c_s
        grads["rnnjax-cudnn"] = compiled(params, xs)
    n_dev = len(jax.devices())
    if n_dev > 1 and batch % n_dev == 0:
        mesh = distributed.batch_mesh()
        loss = make_loss("fast")

        def step(params, xs):
            value, g = jax.value_and_grad(loss)(params, xs)
            return g, value

        dp = distributed.data_parallel(step, mesh)
        p_rep = distributed.replicate(params, mesh)
        xs_sh = distributed.shard_batch(xs, mesh)
        compiled = dp.lower(p_rep, xs_sh).compile()
        fns["rnnjax-dp"] = lambda: jax.block_until_ready(compiled(p_rep, xs_sh))
        g_dp, v_dp = compiled(p_rep, xs_sh)
        grads["rnnjax-dp"] = (v_dp, g_dp)
    # Agreement of the variants with plain autodiff (relative max difference of all gradients).
    ref = jax.tree.leaves(grads["rnnjax-autodiff"])
    agree = {}
    for label, g in grads.items():
        leaves = jax.tree.leaves(g)
        agree[label] = max(
            float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30)) for a, b in zip(leaves, ref)
        )
    return fns, compile_s, agree


def _flax_steps(name, batch, time, inp, hidden, seed):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    fns = {}
    xs = jax.random.normal(jax.random.key(seed + 1), (batch, time, inp), jnp.float32)
    for cell_name in FLAX_CELLS[name]:
        cell_cls = getattr(nn, cell_name)
        model = nn.RNN(cell_cls(features=hidden))
        params = model.init(jax.random.key(seed), xs)

        def loss(params, xs, model=model):
            return jnp.mean(model.apply(params, xs) ** 2)

        compiled, _, _ = common.compile_seconds(jax.value_and_grad(loss), params, xs)
        fns[f"flax-{cell_name}"] = lambda c=compiled, p=params: jax.block_until_ready(c(p, xs))
    return fns


def _torch_steps(name, batch, time, inp, hidden, seed):
    try:
        import torch
    except ImportError:
        return {}, None
    import jax

    device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
    torch.manual_seed(seed)
    kwargs = {"nonlinearity": "tanh"} if name == "elman-tanh" else {}
    module = getattr(torch.nn, TORCH_MODULES[name])(inp, hidden, batch_first=True, **kwargs).to(device)
    x = torch.randn(batch, time, inp, device=device)

    global _TORCH_THREADS
    if _TORCH_THREADS is None:
        _TORCH_THREADS = torch.get_num_threads()  # before any row changes it
    default_threads = _TORCH_THREADS

    def step(threads=default_threads):
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        for p in module.parameters():
            p.grad = None
        out, _ = module(x)
        loss = out.pow(2).mean()
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    info = {"device": device, "threads": default_threads, "mkldnn": torch.backends.mkldnn.is_available()}
    fns = {"torch": step}
    if device == "cpu" and default_threads > 1:
        # One thread too: on a shared machine OpenMP's spinning barriers make the multi-threaded
        # run far slower than it is on an idle one; "/ torch" compares against the faster row.
        fns["torch-1thread"] = lambda: step(1)
    return fns, info


def run(config: Config, quick: bool, out: str | None, settings: dict, command: list[str],
        result_name: str = "train_step") -> dict:
    import jax

    shapes = config.quick_shapes if quick else config.shapes
    if jax.default_backend() == "gpu":
        shapes = tuple(shapes) + tuple(config.gpu_shapes)
    repeats = config.quick_repeats if quick else config.repeats
    rows, results = [], []
    for name, batch, time, inp, hidden in shapes:
        fns, compile_s, agree = _rnnjax_steps(name, batch, time, inp, hidden, config.seed, settings)
        if config.flax:
            fns.update(_flax_steps(name, batch, time, inp, hidden, config.seed))
        torch_info = None
        if config.torch:
            torch_fns, torch_info = _torch_steps(name, batch, time, inp, hidden, config.seed)
            fns.update(torch_fns)
        timing = common.time_interleaved(fns, repeats=repeats, warmup=config.warmup)
        shape = f"{name} ({batch},{time},{inp},{hidden})"
        best_flax = min((v["median_ms"] for k, v in timing.items() if k.startswith("flax")), default=None)
        torch_ms = min((v["median_ms"] for k, v in timing.items() if k.startswith("torch")), default=None)
        for label, t in timing.items():
            results.append(
                {
                    "cell": name, "batch": batch, "time": time, "input": inp, "hidden": hidden,
                    "impl": label, **t,
                    "tokens_per_s": batch * time / (t["median_ms"] / 1e3),
                    "vs_torch": t["median_ms"] / torch_ms if torch_ms else None,
                    "vs_best_flax": t["median_ms"] / best_flax if best_flax else None,
                    "grad_rel_diff_vs_autodiff": agree.get(label),
                    "compile_s": compile_s.get(label),
                }
            )
            rows.append(
                [shape, label, t["median_ms"], f"{t['p25_ms']:.3g}-{t['p75_ms']:.3g}", t["n"], t["cpu_median_ms"],
                 batch * time / (t["median_ms"] / 1e3),
                 None if torch_ms is None else t["median_ms"] / torch_ms,
                 None if best_flax is None else t["median_ms"] / best_flax]
            )
        print(f"{shape}: " + ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in timing.items()), flush=True)
    header = ["cell (B,T,I,H)", "implementation", "median ms", "p25-p75 ms", "n", "CPU ms", "tokens/s", "/ torch", "/ best flax"]
    markdown = (
        "# Training step (forward + backward, float32), interleaved in one process\n\n"
        + common.markdown_table(header, rows)
        + "\n`CPU ms`: median process CPU time per step (all threads). `/ torch`, `/ best flax`: ratio of medians (< 1 is faster).\n"
        + common.provenance(settings, command)
    )
    payload = {
        "benchmark": "train_step", "quick": quick, "config": dataclasses.asdict(config),
        "settings": settings, "system": common.system_info(), "torch": torch_info, "results": results,
    }
    common.write_results(out, result_name, payload, markdown)
    return payload


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two shapes, five rounds")
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    parser.add_argument("--setting", choices=SETTINGS, default="recommended",
                        help="plain: a user's process (default allocator, one device); recommended: tuned "
                             "allocator, one host device per core")
    parser.add_argument("--allocator", choices=("tuned", "default"), default=None)
    parser.add_argument("--host-devices", type=int, default=None, help="CPU host devices for rnnjax-dp")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-flax", action="store_true")
    args = parser.parse_args(argv)
    allocator, host_devices, result_name = SETTINGS[args.setting]
    settings = common.apply_settings(
        allocator=args.allocator or allocator,
        host_devices=args.host_devices if args.host_devices is not None else host_devices,
    )
    settings["setting"] = args.setting
    config = Config(torch=not args.no_torch, flax=not args.no_flax)
    if args.repeats:
        config = dataclasses.replace(config, repeats=args.repeats, quick_repeats=args.repeats)
    run(config, args.quick, args.out, settings, ["python", "benchmarks/train_step.py", *(argv or sys.argv[1:])], result_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
