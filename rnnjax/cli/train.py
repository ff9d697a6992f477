"""``rnnjax train`` and ``rnnjax sample``: train any cell on any task, resumably; sample text from a char-LM run.

Output directory (``--out DIR``):

- ``config.json``: every setting of the run (``rnnjax.train.RunConfig``);
- ``metrics.jsonl``: one line per logged step ``{"step", "loss", "grad_norm", "skipped", "wall_time_s", ...}``;
- ``eval.jsonl``: one line per evaluation ``{"step", "loss", "baseline_loss", "accuracy"}``;
- ``checkpoint.msgpack``: the whole ``TrainState``, written atomically and only with finite values;
- ``gradflow.jsonl`` (``--gradflow-every N``): ``{"step", "grad_norms": [||dL/dc_t|| for t < T]}``;
- ``summary.json``: ``{"task", "cell", "steps", "eval": {"loss", "baseline_loss", "accuracy"},
  "skipped_steps", "wall_time_s", "status", ...}``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import sys
import time

from rnnjax.cli import CLIError

CHECKPOINT = "checkpoint.msgpack"
CHUNK = 100  # steps per compiled lax.scan; boundaries are multiples of this (and of the eval/checkpoint periods)


# --------------------------------------------------------------------------------------------- parser
def register(subparsers) -> None:
    """Add the ``train`` and ``sample`` commands."""
    p = subparsers.add_parser(
        "train",
        help="train a recurrent model on a task",
        description="Train CELL on TASK with optax (Adam by default), writing config.json, metrics.jsonl, "
        "checkpoints and summary.json to --out. Steps whose loss or gradients are NaN/Inf are skipped.",
    )
    p.add_argument("--task", required=True, help="task name (see rnnjax.tasks.TASKS), e.g. adding, copy, charlm")
    p.add_argument("--cell", required=True, help="cell name: elman-tanh, elman-relu, elman-linear, irnn, lstm, gru")
    p.add_argument("--hidden", type=int, default=64, help="hidden size H (default 64)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length T (default: the task's)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size B (default 64)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--clip", type=float, default=1.0,
                   help="global gradient-norm clipping threshold; 0 = off (default 1)")
    p.add_argument("--init-gain", type=float, default=1.0, help="scale of the recurrent initialisation (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of parameters, data and evaluation set (default 0)")
    p.add_argument("--optimizer", default="adam", help="adam, sgd, rmsprop or adamw (default adam)")
    p.add_argument("--out", required=True, help="output directory (must be new or empty unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--tbptt", type=int, default=None, metavar="K",
                   help="truncated BPTT in chunks of K steps (state carried across batches for streaming tasks)")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="evaluate every N steps (default: at the end)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="checkpoint every N steps (default: at evaluations, every 500 steps and at the end)")
    p.add_argument("--log-every", type=int, default=1, metavar="N", help="write every N-th step to metrics.jsonl")
    p.add_argument("--max-skips", type=int, default=20, metavar="N",
                   help="stop after N consecutive skipped (non-finite) steps (default 20)")
    p.add_argument("--gradflow-every", type=int, default=0, metavar="N",
                   help="every N steps append ||dL/dh_t|| for all t to DIR/gradflow.jsonl "
                   "(mean over 16 eval sequences)")
    p.add_argument("--text", default=None, metavar="FILE", help="text file for the charlm task (default: Shakespeare)")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra task option (VALUE parsed as JSON when possible), repeatable")
    try:  # data parallelism (rnnjax.distributed): --devices N and the multi-host flags
        from rnnjax import distributed
    except ImportError:  # pragma: no cover - the module is optional for this command
        p.set_defaults(devices=1, coordinator=None, num_processes=None, process_id=None)
    else:
        distributed.add_device_arguments(p)
    p.set_defaults(func=train_command)

    s = subparsers.add_parser("sample", help="generate text from a trained charlm run",
                              description="Generate text from the checkpoint of a charlm run in --out.")
    s.add_argument("--out", required=True, help="run directory written by rnnjax train --task charlm")
    s.add_argument("--length", type=int, default=500, help="characters to generate (default 500)")
    s.add_argument("--prime", default="\n", help="text the model reads first (default a newline)")
    s.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy (default 0.8)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    s.set_defaults(func=sample_command)


# ------------------------------------------------------------------------------------------- helpers
def _positive(name, value, minimum=1):
    if value is not None and value < minimum:
        raise CLIError(f"--{name}: expected an integer >= {minimum}, got {value}")


def _parse_options(args) -> tuple:
    options = {}
    for item in args.task_option:
        if "=" not in item:
            raise CLIError(f"--task-option: expected KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            options[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = raw
    if args.text is not None:
        if not os.path.isfile(args.text):
            raise CLIError(f"--text: no such file {args.text!r}")
        options["text_file"] = os.path.abspath(args.text)
    return tuple(sorted(options.items()))


def config_from_args(args):
    """Validate the ``train`` flags and return a ``RunConfig`` (``CLIError`` on bad input)."""
    from rnnjax.train import RunConfig

    for name in ("hidden", "batch_size", "steps"):
        _positive(name.replace("_", "-"), getattr(args, name))
    _positive("seq-len", args.seq_len)
    _positive("tbptt", args.tbptt)
    _positive("max-skips", args.max_skips)
    _positive("log-every", args.log_every)
    for name in ("eval_every", "checkpoint_every", "gradflow_every"):
        _positive(name.replace("_", "-"), getattr(args, name), 0)
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise CLIError(f"--lr: expected a positive number, got {args.lr}")
    if not (math.isfinite(args.clip) and args.clip >= 0):
        raise CLIError(f"--clip: expected a non-negative number (0 = off), got {args.clip}")
    if not (math.isfinite(args.init_gain) and args.init_gain > 0):
        raise CLIError(f"--init-gain: expected a positive number, got {args.init_gain}")
    return RunConfig(
        task=args.task, cell=args.cell, hidden=args.hidden, seq_len=args.seq_len, batch_size=args.batch_size,
        steps=args.steps, lr=args.lr, clip=args.clip, init_gain=args.init_gain, seed=args.seed,
        optimizer=args.optimizer, tbptt=args.tbptt, task_options=_parse_options(args), max_skips=args.max_skips,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        gradflow_every=args.gradflow_every,
    )


def _config_json(config) -> dict:
    d = dataclasses.asdict(config)
    d["task_options"] = dict(config.task_options)
    return d


def _config_from_json(d: dict):
    from rnnjax.train import RunConfig

    d = dict(d)
    d["task_options"] = tuple(sorted(d.get("task_options", {}).items()))
    names = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig(**{k: v for k, v in d.items() if k in names})


def write_json(path: str, obj) -> None:
    """Write JSON atomically (temporary file + ``os.replace``)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: str, flag: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        where, name = os.path.dirname(path) or ".", os.path.basename(path)
        raise CLIError(f"{flag}: {where} holds no rnnjax run (no {name})") from None
    except (OSError, json.JSONDecodeError) as err:
        raise CLIError(f"{flag}: cannot read {path}: {err}") from None


def _truncate_jsonl(path: str, max_step: int) -> None:
    """Drop lines with ``step > max_step`` (written after the checkpoint we resume from)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip()]
    kept = []
    for ln in lines:
        try:
            if json.loads(ln).get("step", 0) <= max_step:
                kept.append(ln)
        except json.JSONDecodeError:
            pass  # a line cut by a kill
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def _float_or_none(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _fmt(x):
    return "n/a" if x is None else f"{x:.4g}"


class _Progress:
    """A tqdm bar on a terminal; plain lines (about every 10 %) otherwise."""

    def __init__(self, total: int, start: int, stream=None):
        stream = sys.stderr if stream is None else stream
        self.stream = stream
        self.total = total
        self.bar = None
        self.next_line = start
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, file=stream, unit="step", dynamic_ncols=True)
        self.every = max(1, total // 10)

    def update(self, step: int, loss: float, grad_norm: float, skipped: int):
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{loss:.4g}", grad_norm=f"{grad_norm:.3g}", skipped=skipped, refresh=True)
        elif step >= self.next_line or step == self.total:
            print(f"step {step}/{self.total}  loss {loss:.4g}  grad_norm {grad_norm:.3g}  skipped {skipped}",
                  file=self.stream, flush=True)
            self.next_line = (step // self.every + 1) * self.every

    def write(self, line: str):
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _gradflow_fn(trainer, config):
    """A jitted ``params -> (T,)`` mean ``||dL/dc_t||`` over the first 16 eval sequences, or None."""
    import jax
    import jax.numpy as jnp

    from rnnjax.gradflow import hidden_grad_norms
    from rnnjax.models import masked_mse, masked_xent, step_mask

    model, task = trainer.model, trainer.task
    if model.pattern not in ("many_to_one", "many_to_many"):
        raise CLIError(f"--gradflow-every: supported for many_to_one and many_to_many tasks, not {model.pattern}")
    batch = jax.tree.map(lambda a: a[:16], task.eval_batch())
    readout_apply = lambda w, h: h @ w.w.T + w.b  # noqa: E731

    def one(params, x, y, n):
        def loss_fn(ys):
            if model.pattern == "many_to_one":
                h = ys[-1] if n is None else ys[jnp.clip(n - 1, 0, ys.shape[0] - 1)]
                out, tgt, mask = readout_apply(params.readout, h), y, None
            else:
                out, tgt = readout_apply(params.readout, ys), y
                mask = None if n is None else step_mask(n[None], 1, ys.shape[0])[0]
            if model.loss_name == "mse":
                return masked_mse(out, tgt, mask)
            return masked_xent(out, tgt, mask)[0]

        return hidden_grad_norms(model.cell, params.cell, x, loss_fn)

    def fn(params):
        n = batch.input_lengths
        if n is None:
            norms = jax.vmap(lambda x, y: one(params, x, y, None))(batch.inputs, batch.targets)
        else:
            norms = jax.vmap(lambda x, y, k: one(params, x, y, k))(batch.inputs, batch.targets, n)
        return jnp.mean(norms, axis=0)

    return jax.jit(fn)


# -------------------------------------------------------------------------------------------- train
def _check_out(args, config):
    """Validate the output directory (nothing is written); return the config to use."""
    out = args.out
    config_path = os.path.join(out, "config.json")
    if not args.resume:
        if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
            what = "holds another run" if os.path.exists(config_path) else "is not an empty directory"
            raise CLIError(f"--out: {out} {what}; pass --resume to continue it or choose a new directory")
        return config
    stored = _read_json(config_path, "--resume")
    try:
        old = _config_from_json(stored)
    except TypeError as err:
        raise CLIError(f"--resume: {config_path} is not a valid run config ({err})") from None
    from rnnjax.train import RunConfig

    diff = [
        f"--{f.name.replace('_', '-')} {getattr(old, f.name)!r} (stored) vs {getattr(config, f.name)!r}"
        for f in dataclasses.fields(RunConfig)
        if f.name not in RunConfig.LOOP_FIELDS and getattr(old, f.name) != getattr(config, f.name)
    ]
    if diff:
        raise CLIError(f"--resume: flags differ from {config_path}: {'; '.join(diff)}")
    return config


def train_command(args) -> int:
    """Handler of ``rnnjax train``; returns the exit code (1 if stopped by non-finite steps)."""
    config = config_from_args(args)
    mesh = None
    if args.devices != 1 or args.coordinator is not None:
        from rnnjax import distributed

        mesh = distributed.mesh_from_args(args, batch_size=config.batch_size)  # before any JAX operation
    from rnnjax.tasks import TASKS

    if config.task not in TASKS:
        raise CLIError(f"--task: unknown task {config.task!r}; expected one of {', '.join(sorted(TASKS))}")
    from rnnjax import CELLS

    if config.cell not in CELLS:
        raise CLIError(f"--cell: unknown cell {config.cell!r}; expected one of {', '.join(sorted(CELLS))}")
    if args.resume and not os.path.isdir(args.out):
        raise CLIError(f"--resume: {args.out} holds no rnnjax run (no such directory)")
    config = _check_out(args, config)
    # Validate everything before touching the output directory.
    import jax

    from rnnjax import checkpoint as ckpt
    from rnnjax.train import build, run_key

    try:
        trainer = build(config)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise CLIError(str(err).splitlines()[0]) from None
    init, run = jax.jit(trainer.init), None
    if mesh is not None:
        from rnnjax import distributed

        trainer = distributed.data_parallel_trainer(trainer, mesh, max_skips=config.max_skips)
        init, run = distributed.data_parallel_init(trainer, mesh), distributed.data_parallel_run(trainer, mesh)
    state = init(run_key(config.seed))
    # Multi-host: every process computes, only process 0 writes --out (the others would append the same
    # lines to the same files); a resumed run reads the checkpoint in every process (a shared --out).
    writer = jax.process_index() == 0
    ckpt_path = os.path.join(args.out, CHECKPOINT)
    wall_offset = 0.0
    if args.resume:
        if os.path.exists(ckpt_path):
            try:
                state, meta = ckpt.load(ckpt_path, state)
            except ckpt.CheckpointError as err:
                raise CLIError(f"--resume: {err}") from None
            wall_offset = float(meta.get("wall_time_s", 0.0))
        start = int(state.step)
        if writer:
            for name in ("metrics.jsonl", "eval.jsonl", "gradflow.jsonl"):
                _truncate_jsonl(os.path.join(args.out, name), start)
            summary = os.path.join(args.out, "summary.json")
            if os.path.exists(summary):
                os.replace(summary, summary + ".previous")
    elif writer:
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as err:
            raise CLIError(f"--out: cannot create {args.out}: {err.strerror}") from None
    if writer:
        write_json(os.path.join(args.out, "config.json"), {**_config_json(config), "devices": args.devices})
    return _train_loop(config, trainer, state, args.out, wall_offset, run, writer=writer)


def _boundaries(config):
    periods = [CHUNK]
    for p in (config.eval_every, config.checkpoint_every or 500, config.gradflow_every):
        if p:
            periods.append(p)
    return periods


def _train_loop(config, trainer, state, out, wall_offset, run=None, *, writer: bool = True) -> int:
    """Run the chunks, logging, evaluating and checkpointing; ``writer=False`` computes the same and writes nothing."""
    import jax
    import numpy as np

    from rnnjax import checkpoint as ckpt

    task = trainer.task
    from rnnjax.train import compiler_options

    run = jax.jit(trainer.run, static_argnums=1, compiler_options=compiler_options()) if run is None else run
    evaluate = jax.jit(trainer.evaluate, compiler_options=compiler_options())
    gradflow = _gradflow_fn(trainer, config) if config.gradflow_every else None
    ckpt_every = config.checkpoint_every or 500
    periods = _boundaries(config)
    total = config.steps
    step = int(state.step)
    t0 = time.perf_counter()
    wall = lambda: wall_offset + time.perf_counter() - t0  # noqa: E731
    progress = _Progress(total, step, stream=None if writer else io.StringIO())  # other processes: quiet
    metrics_f = open(os.path.join(out, "metrics.jsonl") if writer else os.devnull, "a")
    last_eval = None

    def do_eval(s):
        nonlocal last_eval
        res = {k: _float_or_none(v) for k, v in evaluate(state.params).items()}
        line = {"step": s, "loss": res["loss"], "baseline_loss": task.baseline_loss, "accuracy": res.get("accuracy")}
        line.update({k: v for k, v in res.items() if k not in line})
        if writer:
            with open(os.path.join(out, "eval.jsonl"), "a") as f:
                f.write(json.dumps(line) + "\n")
        base = f" (baseline {task.baseline_loss:.4g})" if task.baseline_loss is not None else ""
        acc = f"  accuracy {_fmt(res['accuracy'])}" if "accuracy" in res else ""
        progress.write(f"eval step {s}: loss {_fmt(res['loss'])}{base}{acc}")
        last_eval = line

    def do_gradflow(s):
        norms = np.asarray(gradflow(state.params), dtype=np.float64)
        if not writer:
            return
        with open(os.path.join(out, "gradflow.jsonl"), "a") as f:
            f.write(json.dumps({"step": s, "grad_norms": [_float_or_none(x) for x in norms]}) + "\n")

    def save(s):
        if writer:
            meta = {"step": s, "wall_time_s": wall(), "config": _config_json(config)}
            ckpt.save(os.path.join(out, CHECKPOINT), state, meta)

    status = "completed"
    try:
        if gradflow is not None and step == 0:
            do_gradflow(0)
        while step < total:
            nxt = min([(step // p + 1) * p for p in periods] + [total])
            state, m = run(state, nxt - step)
            m = jax.device_get(m)
            ran = ~np.asarray(m["halted"])
            steps_run = np.arange(step + 1, nxt + 1)[ran]
            now = wall()
            for i, s in zip(np.flatnonzero(ran), steps_run):
                if s % config.log_every == 0 or s == total:
                    row = {"step": int(s), "loss": _float_or_none(m["loss"][i]),
                           "grad_norm": _float_or_none(m["grad_norm"][i]), "skipped": bool(m["skipped"][i]),
                           "wall_time_s": round(now, 3)}
                    if "accuracy" in m:
                        row["accuracy"] = _float_or_none(m["accuracy"][i])
                    metrics_f.write(json.dumps(row) + "\n")
            metrics_f.flush()
            step = int(state.step)
            n_skipped = int(state.skipped)
            if ran.any():
                j = np.flatnonzero(ran)[-1]
                progress.update(step, float(m["loss"][j]), float(m["grad_norm"][j]), n_skipped)
            if int(state.consecutive_skips) >= config.max_skips:
                status = "stopped_non_finite"
                progress.write(
                    f"stopped at step {step}: {config.max_skips} consecutive steps had a non-finite loss or gradient "
                    f"(skipped {n_skipped} steps in all); parameters are those of the last finite step"
                )
                break
            if config.eval_every and step % config.eval_every == 0 and step < total:
                do_eval(step)
            if gradflow is not None and step % config.gradflow_every == 0:
                do_gradflow(step)
            if step % ckpt_every == 0 and step < total:
                save(step)
    finally:
        metrics_f.close()
        progress.close()
    save(step)
    do_eval(step)
    summary = {
        "task": config.task,
        "cell": config.cell,
        "steps": step,
        "requested_steps": total,
        "eval": {"loss": last_eval["loss"], "baseline_loss": task.baseline_loss, "accuracy": last_eval["accuracy"]},
        "skipped_steps": int(state.skipped),
        "wall_time_s": round(wall(), 3),
        "status": status,
        "seed": config.seed,
        "hidden": config.hidden,
        "seq_len": task.info.get("seq_len", config.seq_len),
        "lr": config.lr,
        "clip": config.clip,
        "init_gain": config.init_gain,
    }
    if writer:
        write_json(os.path.join(out, "summary.json"), summary)
    if status != "completed":
        print(f"rnnjax train: run stopped after {config.max_skips} consecutive non-finite steps "
              f"(step {step} of {total}); summary in {os.path.join(out, 'summary.json')}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------------- sample
def sample_command(args) -> int:
    """Handler of ``rnnjax sample``: print ``--length`` characters generated by a charlm run."""
    import jax
    import numpy as np

    from rnnjax import checkpoint as ckpt
    from rnnjax.models import generate
    from rnnjax.train import build, run_key

    _positive("length", args.length)
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise CLIError(f"--temperature: expected a non-negative number, got {args.temperature}")
    config = _config_from_json(_read_json(os.path.join(args.out, "config.json"), "--out"))
    try:
        trainer = build(config)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise CLIError(f"--out: cannot rebuild the run: {str(err).splitlines()[0]}") from None
    info = trainer.task.info
    if "encode" not in info or "decode" not in info or trainer.model.pattern != "many_to_many":
        raise CLIError(f"--out: sampling needs a character-level language model run (charlm), got task {config.task!r}")
    template = jax.jit(trainer.init)(run_key(config.seed))
    try:
        state, _ = ckpt.load(os.path.join(args.out, CHECKPOINT), template)
    except ckpt.CheckpointError as err:
        raise CLIError(f"--out: {err}") from None
    try:
        prime = np.asarray(info["encode"](args.prime))
    except (ValueError, KeyError) as err:
        raise CLIError(f"--prime: {str(err).splitlines()[0]}") from None
    if prime.size == 0:
        raise CLIError("--prime: expected at least one character")
    toks = jax.jit(generate, static_argnums=(0, 4), static_argnames="temperature")(
        trainer.model, state.params, jax.random.key(args.seed), prime, args.length, temperature=args.temperature
    )
    sys.stdout.write(args.prime + info["decode"](np.asarray(toks)) + "\n")
    return 0
