"""``rnnjax train`` and ``rnnjax sample``: train any cell on any task, resumably; sample text from a char-LM run.

One run per output directory (``--out DIR``), held under an exclusive lock for
the whole run (``rnnjax.rundir.RunLock``): a second process on ``DIR`` exits 2
at once and changes nothing. Every check (flags, task and model, ``--resume``
against the stored run) runs before the first byte is written. ``DIR`` gets:

- ``config.json``: every setting of the run (``rnnjax.train.RunConfig``);
- ``metrics.jsonl``: one line per logged step ``{"step", "loss", "grad_norm", "skipped", "wall_time_s", ...}``;
- ``eval.jsonl``: one line per evaluation ``{"step", "loss", "baseline_loss", "accuracy"}``;
- ``checkpoint.msgpack``: the whole ``TrainState`` and the run's config, written atomically, finite values only,
  at step 0, at every evaluation, every ``--checkpoint-every`` steps (default 500) and at the end;
- ``gradflow.jsonl`` (``--gradflow-every N``): ``{"step", "grad_norms": [||dL/dc_t|| for t < T]}``;
- ``lyapunov.jsonl`` (``--lyapunov-every N``): ``{"step", "exponents": [lambda_1 >= ... >= lambda_K]}``, the
  mean over 8 evaluation sequences of ``rnnjax.gradflow.lyapunov_spectrum`` (transient T // 10), and
  ``lyapunov.png``, the exponents against the training step (TensorBoard: ``train/lyapunov_<i>``);
- ``tensorboard/`` (``--tensorboard``): the same metrics as TensorBoard event files;
- ``summary.json``: ``{"task", "cell", "steps", "eval": {"loss", "baseline_loss", "accuracy"},
  "skipped_steps", "wall_time_s", "status", ...}``;
- ``.lock`` while the run is alive: the holder's pid, host and start time.

``--resume`` continues from the checkpoint and refuses (exit 2, directory unchanged) a checkpoint or
``config.json`` whose settings differ from the flags (loop settings aside), a directory with logs but
no checkpoint, and ``--steps`` below the checkpoint's step; a finished run resumed with the same
``--steps`` is left as it is.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time

from rnnjax.cli import CLIError
from rnnjax.cli._runflags import add_run_arguments, as_cli_error, config_from_args

CHECKPOINT = "checkpoint.msgpack"
CHUNK = 100  # steps per compiled lax.scan; boundaries are multiples of this (and of the eval/checkpoint periods)
LOGS = ("metrics.jsonl", "eval.jsonl", "gradflow.jsonl", "lyapunov.jsonl")
LYAPUNOV_SEQUENCES = 8  # evaluation sequences averaged by --lyapunov-every
DEFAULT_CHECKPOINT_EVERY = 500


# --------------------------------------------------------------------------------------------- parser
def register(subparsers) -> None:
    """Add the ``train`` and ``sample`` commands."""
    from rnnjax.cli._devices import add_device_arguments

    p = subparsers.add_parser(
        "train",
        help="train a recurrent model on a task",
        description="Train CELL on TASK with optax (Adam by default), writing config.json, metrics.jsonl, "
        "checkpoints and summary.json to --out (one run per directory, locked while it runs). Steps whose "
        "loss or gradients are NaN/Inf are skipped.",
    )
    add_run_arguments(p)
    p.add_argument("--out", required=True, help="output directory (must be new or empty unless --resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (same flags; only --steps and the "
                   "logging/eval/checkpoint periods may change)")
    add_device_arguments(p)
    p.set_defaults(func=train_command)

    s = subparsers.add_parser("sample", help="generate text from a trained charlm or wordlm run (a MIDI file from "
                              "chorales)",
                              description="Generate text from the checkpoint of a charlm or wordlm run in --out; for a "
                              "chorales run, write a MIDI file and a piano-roll PNG.")
    s.add_argument("--out", required=True, help="run directory written by rnnjax train --task charlm (or wordlm, "
                   "chorales)")
    s.add_argument("--length", type=int, default=500, help="characters (charlm) or words (wordlm) to generate "
                   "(default 500)")
    s.add_argument("--prime", default="\n", help="text the model reads first (default a newline; wordlm reads a "
                   "blank prime as '.')")
    s.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy (default 0.8)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    s.add_argument("--midi", default=None, help="chorales: MIDI file to write (default OUT/sample.mid); the "
                   "piece starts with the first --prime-frames frames of the first test chorale")
    s.add_argument("--png", default=None, help="chorales: piano-roll PNG to write (default OUT/sample.png)")
    s.add_argument("--prime-frames", type=int, default=4, help="chorales: frames of the prime (default 4)")
    s.set_defaults(func=sample_command)


# ------------------------------------------------------------------------------------------- helpers
def _positive(name, value, minimum=1):
    if value is not None and value < minimum:
        raise CLIError(f"--{name}: expected an integer >= {minimum}, got {value}")


def _read_json(path: str, flag: str) -> dict:
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        where, name = os.path.dirname(path) or ".", os.path.basename(path)
        raise CLIError(f"{flag}: {where} holds no rnnjax run (no {name})") from None
    except (OSError, json.JSONDecodeError) as err:
        raise CLIError(f"{flag}: cannot read {path}: {err}") from None


def _stored_config(d: dict, what: str):
    from rnnjax.train import RunConfig

    try:
        return RunConfig.from_json(d)
    except (TypeError, ValueError) as err:
        raise CLIError(f"--resume: {what} is not a valid run config ({str(err).splitlines()[0]})") from None


def _differences(stored, config, what: str) -> None:
    diff = stored.differences(config)
    if diff:
        pairs = "; ".join(f"--{n.replace('_', '-')} {getattr(stored, n)!r} there, {getattr(config, n)!r} now"
                          for n in diff)
        raise CLIError(f"--resume: {what} was written by a different run ({pairs})")


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


def _gradflow_fn(trainer):
    """A jitted ``params -> (T,)``: the model's ``grad_profile`` on the first 16 evaluation sequences."""
    import jax

    from rnnjax.models import grad_profile

    batch = jax.tree.map(lambda a: a[:16], trainer.task.eval_batch())
    try:
        jax.eval_shape(lambda p: grad_profile(trainer.model, p, batch), jax.eval_shape(trainer.model.init,
                                                                                        jax.random.key(0)))
    except (ValueError, TypeError) as err:
        raise CLIError(f"--gradflow-every: {str(err).splitlines()[0]}") from None
    return jax.jit(lambda params: grad_profile(trainer.model, params, batch))


def _lyapunov_fn(trainer, k: int):
    """A jitted ``params -> (k,)``: the mean top-``k`` Lyapunov spectrum on the first evaluation sequences."""
    import jax
    import jax.numpy as jnp

    from rnnjax import gradflow
    from rnnjax._carry import carry_size
    from rnnjax.train import dynamics_cell

    try:
        cell = dynamics_cell(trainer.model, trainer.task, "lyapunov_every")
    except ValueError as err:
        raise as_cli_error(err) from None
    n = carry_size(cell)
    if k > n:
        raise CLIError(f"--lyapunov-k: expected an integer in [1, {n}] (the carry has {n} real entries), got {k}")
    xs = trainer.task.eval_batch().inputs[:LYAPUNOV_SEQUENCES]
    transient = xs.shape[1] // 10

    def spectrum(params):
        per_seq = jax.vmap(lambda x: gradflow.lyapunov_spectrum(cell, params.cell, x.astype(
            jnp.result_type(*jax.tree.leaves(params.cell))), k=k, transient=transient))(xs)
        return jnp.mean(per_seq, axis=0)

    return jax.jit(spectrum)


def lyapunov_figure(path: str, rows: list[dict]) -> None:
    """Plot ``lyapunov.jsonl`` rows (``{"step", "exponents"}``): each exponent against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    k = max((len(r["exponents"]) for r in rows), default=0)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for i in range(k):
        ys = [r["exponents"][i] if i < len(r["exponents"]) and r["exponents"][i] is not None else float("nan")
              for r in rows]
        ax.plot(steps, ys, marker="o", ms=3, label=f"$\\lambda_{{{i + 1}}}$")
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xlabel("training step")
    ax.set_ylabel("Lyapunov exponent (nats/step)")
    ax.set_title("Lyapunov spectrum through training", fontsize=9)
    if k:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -------------------------------------------------------------------------------------------- train
class _Plan:
    """Everything ``train_command`` decided before writing: the state to start from and what to do."""

    def __init__(self, state, wall_offset=0.0, resumed=False, finished=False):
        self.state, self.wall_offset, self.resumed, self.finished = state, wall_offset, resumed, finished


def _check_new(out: str) -> None:
    entries = os.listdir(out)
    if entries:
        what = "holds another run" if "config.json" in entries else "is not an empty directory"
        raise CLIError(f"--out: {out} {what}; pass --resume to continue it or choose a new directory")


def _plan_resume(out: str, config, template) -> _Plan:
    """Verify the run in ``out`` against ``config`` and load its checkpoint; nothing is written."""
    from rnnjax import checkpoint as ckpt

    config_path = os.path.join(out, "config.json")
    _differences(_stored_config(_read_json(config_path, "--resume"), config_path), config, config_path)
    ckpt_path = os.path.join(out, CHECKPOINT)
    if not os.path.exists(ckpt_path):
        logs = [n for n in LOGS + ("summary.json",) if os.path.exists(os.path.join(out, n))]
        if logs:
            raise CLIError(f"--resume: {out} has logs ({', '.join(logs)}) but no {CHECKPOINT}: nothing to resume "
                           "from; start a new run in another directory")
        return _Plan(template, resumed=True)  # killed before its first log line: start at step 0
    try:
        meta = ckpt.load_metadata(ckpt_path)
    except ckpt.CheckpointError as err:
        raise CLIError(f"--resume: {err}") from None
    if "config" not in meta:
        raise CLIError(f"--resume: {ckpt_path} stores no run config; cannot verify that it belongs to this run")
    _differences(_stored_config(meta["config"], ckpt_path), config, ckpt_path)
    try:
        state, meta = ckpt.load(ckpt_path, template)
    except ckpt.CheckpointError as err:
        raise CLIError(f"--resume: {err}") from None
    step = int(state.step)
    if step > config.steps:
        raise CLIError(f"--steps: {config.steps} is below the checkpoint's step {step}; pass --steps >= {step}")
    finished = step == config.steps and os.path.exists(os.path.join(out, "summary.json"))
    return _Plan(state, float(meta.get("wall_time_s", 0.0)), resumed=True, finished=finished)


def train_command(args) -> int:
    """Handler of ``rnnjax train``; returns the exit code (1 if stopped by non-finite steps)."""
    from rnnjax.cli._devices import mesh_from_args

    config = config_from_args(args)
    if config.tensorboard:
        from rnnjax.writers import tensorboard_available

        if not tensorboard_available():
            raise CLIError('--tensorboard: the tensorboardX package is missing; pip install "rnnjax[tensorboard]"')
    if args.resume and not os.path.isdir(args.out):
        raise CLIError(f"--resume: {args.out} holds no rnnjax run (no such directory)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CLIError(f"--out: {args.out} is a file, not a directory")
    mesh = None
    if args.devices != 1 or args.coordinator is not None:
        mesh = mesh_from_args(args, batch_size=config.batch_size)  # before any JAX operation
    import jax

    # Multi-host: every process computes, only process 0 locks and writes --out; a resumed run reads the
    # checkpoint in every process (a shared --out).
    writer = jax.process_index() == 0
    lock = _lock(args.out) if writer else None  # before anything slow: a second run is refused at once
    try:
        return _train(args, config, mesh, lock)
    finally:
        if lock is not None:
            lock.release()


def _lock(out: str):
    from rnnjax.rundir import DirectoryBusy, RunLock

    try:
        return RunLock(out)
    except DirectoryBusy as err:
        raise CLIError(f"--out: {err}") from None
    except OSError as err:
        raise CLIError(f"--out: cannot create {out}: {err.strerror}") from None


def _train(args, config, mesh, lock) -> int:
    """Build, verify, then (and only then) write: the part of ``train_command`` that runs under the lock."""
    import jax

    from rnnjax.train import build, run_key

    if lock is not None and not args.resume:
        _check_new(args.out)
    try:
        trainer = build(config)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise as_cli_error(err) from None
    gradflow = _gradflow_fn(trainer) if config.gradflow_every else None
    lyapunov = _lyapunov_fn(trainer, config.lyapunov_k) if config.lyapunov_every else None
    init, run = jax.jit(trainer.init), None
    if mesh is not None and config.floss_k:
        raise CLIError("--floss-k: gradient flossing runs on one device; drop --devices/--coordinator")
    if mesh is not None:
        from rnnjax import distributed

        trainer = distributed.data_parallel_trainer(trainer, mesh, max_skips=config.max_skips)
        init, run = distributed.data_parallel_init(trainer, mesh), distributed.data_parallel_run(trainer, mesh)
    template = init(run_key(config.seed))
    plan = _plan_resume(args.out, config, template) if args.resume else _Plan(template)
    if plan.finished:
        print(f"rnnjax train: {args.out} already finished {config.steps} steps; nothing to do", file=sys.stderr)
        return 0
    if lock is not None:
        lock.record()
        _prepare_directory(args.out, config, plan, args.devices)
    return _train_loop(config, trainer, plan, args.out, run, gradflow, writer=lock is not None, lyapunov=lyapunov)


def _prepare_directory(out: str, config, plan: _Plan, devices: int) -> None:
    """The first writes of a run: logs cut back to the checkpoint (resume), stale temporaries gone, config.json."""
    from rnnjax.rundir import remove_stale_temporaries, truncate_jsonl, write_json

    start = int(plan.state.step)
    if plan.resumed:
        for name in LOGS:
            truncate_jsonl(os.path.join(out, name), start)
        summary = os.path.join(out, "summary.json")
        if os.path.exists(summary):
            os.replace(summary, summary + ".previous")
    for name in ("config.json", "summary.json", CHECKPOINT) + LOGS:
        remove_stale_temporaries(os.path.join(out, name))
    write_json(os.path.join(out, "config.json"), {**config.to_json(), "devices": devices})


def _boundaries(config):
    periods = [CHUNK]
    for p in (config.eval_every, config.checkpoint_every or DEFAULT_CHECKPOINT_EVERY, config.gradflow_every,
              config.lyapunov_every):
        if p:
            periods.append(p)
    return periods


def _train_loop(config, trainer, plan, out, run=None, gradflow=None, *, writer: bool = True, lyapunov=None) -> int:
    """Run the chunks, logging, evaluating and checkpointing; ``writer=False`` computes the same and writes nothing."""
    import jax
    import numpy as np

    from rnnjax import checkpoint as ckpt
    from rnnjax.rundir import write_json
    from rnnjax.writers import MultiWriter, open_writers

    task, state = trainer.task, plan.state
    run = jax.jit(trainer.run, static_argnums=1) if run is None else run
    evaluate = jax.jit(trainer.evaluate)
    ckpt_every = config.checkpoint_every or DEFAULT_CHECKPOINT_EVERY
    periods = _boundaries(config)
    total = config.steps
    step = int(state.step)
    t0 = time.perf_counter()
    wall = lambda: plan.wall_offset + time.perf_counter() - t0  # noqa: E731
    progress = _Progress(total, step, stream=None if writer else io.StringIO())  # other processes: quiet
    log = open_writers(out, tensorboard=config.tensorboard, purge_step=step if plan.resumed else None) \
        if writer else MultiWriter([])
    last_eval = None

    def do_eval(s):
        nonlocal last_eval
        res = {k: float(v) for k, v in evaluate(state.params).items()}
        line = {"loss": res["loss"], "baseline_loss": task.baseline_loss, "accuracy": res.get("accuracy")}
        line.update({k: v for k, v in res.items() if k not in line})
        log.scalars(s, line, group="eval")
        log.flush()
        base = f" (baseline {task.baseline_loss:.4g})" if task.baseline_loss is not None else ""
        acc = f"  accuracy {_fmt(res['accuracy'])}" if "accuracy" in res else ""
        progress.write(f"eval step {s}: loss {_fmt(res['loss'])}{base}{acc}")
        last_eval = {k: (v if v is None or math.isfinite(v) else None) for k, v in line.items()}

    def do_gradflow(s):
        log.profile(s, np.asarray(gradflow(state.params), dtype=np.float64).tolist())
        log.flush()

    def do_lyapunov(s):
        import json

        from rnnjax.writers import TensorBoardWriter

        exps = [float(x) if math.isfinite(float(x)) else None for x in np.asarray(lyapunov(state.params))]
        if writer:
            with open(os.path.join(out, "lyapunov.jsonl"), "a") as f:
                f.write(json.dumps({"step": int(s), "exponents": exps}) + "\n")
        for w in log.writers:
            if isinstance(w, TensorBoardWriter):
                w.scalars(s, {f"lyapunov_{i + 1}": x for i, x in enumerate(exps)})

    def save(s):
        if writer:
            meta = {"step": s, "wall_time_s": wall(), "config": config.to_json()}
            ckpt.save(os.path.join(out, CHECKPOINT), state, meta)

    status = "completed"
    try:
        if step == 0:  # a run is resumable from its first log line on
            save(0)
        if gradflow is not None and step == 0:
            do_gradflow(0)
        if lyapunov is not None and step == 0:
            do_lyapunov(0)
        while step < total:
            nxt = min([(step // p + 1) * p for p in periods] + [total])
            state, m = run(state, nxt - step)
            m = jax.device_get(m)
            ran = ~np.asarray(m["halted"])
            now = round(wall(), 3)
            for i, s in zip(np.flatnonzero(ran), np.arange(step + 1, nxt + 1)[ran]):
                if s % config.log_every == 0 or s == total:
                    row = {"loss": m["loss"][i], "grad_norm": m["grad_norm"][i], "skipped": bool(m["skipped"][i]),
                           "wall_time_s": now}
                    if "accuracy" in m:
                        row["accuracy"] = m["accuracy"][i]
                    if "floss" in m:
                        row["floss"] = m["floss"][i]
                    log.scalars(int(s), row)
            log.flush()
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
            if step >= total:
                break
            evaluated = bool(config.eval_every) and step % config.eval_every == 0
            if evaluated:
                do_eval(step)
            if gradflow is not None and step % config.gradflow_every == 0:
                do_gradflow(step)
            if lyapunov is not None and step % config.lyapunov_every == 0:
                do_lyapunov(step)
            if evaluated or step % ckpt_every == 0:  # a checkpoint at every evaluation, as documented
                save(step)
        save(step)
        do_eval(step)
        if gradflow is not None and step % config.gradflow_every == 0 and step > 0:
            do_gradflow(step)
        if lyapunov is not None and step % config.lyapunov_every == 0 and step > 0:
            do_lyapunov(step)
    finally:
        log.close()
        progress.close()
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
        "eval_seed": config.eval_seed,
        "hidden": config.hidden,
        "seq_len": task.info.get("seq_len", config.seq_len),
        "lr": config.lr,
        "clip": config.clip,
        "init_gain": config.init_gain,
    }
    if writer:
        write_json(os.path.join(out, "summary.json"), summary)
        if lyapunov is not None and os.path.exists(os.path.join(out, "lyapunov.jsonl")):
            from rnnjax.rundir import read_jsonl

            lyapunov_figure(os.path.join(out, "lyapunov.png"), read_jsonl(os.path.join(out, "lyapunov.jsonl")))
    if status != "completed":
        print(f"rnnjax train: run stopped after {config.max_skips} consecutive non-finite steps "
              f"(step {step} of {total}); summary in {os.path.join(out, 'summary.json')}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------------- sample
def sample_command(args) -> int:
    """Handler of ``rnnjax sample``: print ``--length`` characters (charlm) or words (wordlm) generated by a run."""
    import jax
    import numpy as np

    from rnnjax import checkpoint as ckpt
    from rnnjax.models import generate
    from rnnjax.train import build, run_key

    _positive("length", args.length)
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise CLIError(f"--temperature: expected a non-negative number, got {args.temperature}")
    from rnnjax.train import RunConfig

    try:
        config = RunConfig.from_json(_read_json(os.path.join(args.out, "config.json"), "--out"))
    except (TypeError, ValueError) as err:
        raise CLIError(f"--out: config.json is not a valid run config ({str(err).splitlines()[0]})") from None
    try:
        trainer = build(config)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise CLIError(f"--out: cannot rebuild the run: {str(err).splitlines()[0]}") from None
    info = trainer.task.info
    if "write_midi" in info:
        return _sample_roll(args, config, trainer)
    if "encode" not in info or "decode" not in info or trainer.model.pattern != "many_to_many":
        raise CLIError(f"--out: sampling needs a language model run (charlm, wordlm), got task {config.task!r}")
    template = jax.jit(trainer.init)(run_key(config.seed))
    try:
        state, _ = ckpt.load(os.path.join(args.out, CHECKPOINT), template)
    except ckpt.CheckpointError as err:
        raise CLIError(f"--out: {err}") from None
    try:
        prime = np.asarray(info["encode"](args.prime))
    except (ValueError, KeyError) as err:
        raise CLIError(f"--prime: {str(err).splitlines()[0]}") from None
    separator = info.get("separator", "")  # " " for a word-level model (wordlm)
    if prime.size == 0 and separator:
        prime = np.asarray(info["encode"]("."))  # a blank prime: start as after the end of a sentence
    if prime.size == 0:
        raise CLIError("--prime: expected at least one character")
    toks = jax.jit(generate, static_argnums=(0, 4), static_argnames="temperature")(
        trainer.model, state.params, jax.random.key(args.seed), prime, args.length, temperature=args.temperature
    )
    text = info["decode"](np.asarray(toks))
    if separator:
        text = (args.prime.strip() + separator if args.prime.strip() else "") + text
    else:
        text = args.prime + text
    sys.stdout.write(text + "\n")
    return 0


def _sample_roll(args, config, trainer) -> int:
    """``rnnjax sample`` of a piano-roll run (chorales): write a MIDI file and a piano-roll PNG."""
    import jax
    import numpy as np

    from rnnjax import checkpoint as ckpt
    from rnnjax.models import generate_bernoulli
    from rnnjax.train import run_key

    info = trainer.task.info
    test = trainer.task.eval_batch()
    first = int(np.asarray(test.input_lengths)[0])
    _positive("prime-frames", args.prime_frames)
    if args.prime_frames > first:
        raise CLIError(f"--prime-frames: expected at most {first} (the first test chorale's steps), "
                       f"got {args.prime_frames}")
    midi = args.midi or os.path.join(args.out, "sample.mid")
    png = args.png or os.path.join(args.out, "sample.png")
    for flag, path in (("--midi", midi), ("--png", png)):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CLIError(f"{flag}: folder {folder} does not exist")
    template = jax.jit(trainer.init)(run_key(config.seed))
    try:
        state, _ = ckpt.load(os.path.join(args.out, CHECKPOINT), template)
    except ckpt.CheckpointError as err:
        raise CLIError(f"--out: {err}") from None
    prime = np.asarray(test.inputs[0, :args.prime_frames])
    try:
        frames = jax.jit(generate_bernoulli, static_argnums=(0, 4), static_argnames="temperature")(
            trainer.model, state.params, jax.random.key(args.seed), prime, args.length, temperature=args.temperature)
    except ValueError as err:
        raise as_cli_error(err) from None
    roll = np.concatenate([prime, np.asarray(frames)], axis=0)
    info["write_midi"](roll, midi)
    info["plot_roll"](roll, png, f"{config.task}: {args.prime_frames} prime + {args.length} sampled frames")
    sys.stdout.write(f"wrote {midi} and {png} ({len(roll)} frames of {info['quarter_length']} quarter notes)\n")
    return 0
