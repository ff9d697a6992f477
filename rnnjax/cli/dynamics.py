"""``rnnjax dynamics``: fixed points of a trained run's cell, their stability, and figures.

Loads the run in ``--run DIR`` (its ``config.json`` and ``checkpoint.msgpack``,
as ``rnnjax sample`` does), samples initial carries from the carries the
trained cell visits on the task's evaluation inputs (plus Gaussian noise),
finds the fixed points at zero input with ``rnnjax.dynamics.fixed_points`` and
writes to ``--out OUT``:

- ``fixed_points.json``: ``count``, ``stable_count``, per point ``q``, ``stable``
  and the moduli of its step-Jacobian eigenvalues, and the settings used;
- ``trajectories.png``: the hidden trajectories on evaluation sequences in
  their first two principal components, fixed points overlaid (stable filled,
  unstable hollow);
- ``eigenvalues.png``: each point's Jacobian eigenvalues against the unit circle.

Example::

    rnnjax dynamics --run runs/flipflop_gru --out runs/flipflop_gru/dynamics
"""

from __future__ import annotations

import math
import os
import sys

from rnnjax.cli import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dynamics",
        help="find the fixed points of a trained run and their stability",
        description="Fixed points at zero input of the cell of a finished rnnjax train run (minimise "
        "q = 1/2 ||F(c) - c||^2 from carries visited on the evaluation inputs, plus noise), their step-Jacobian "
        "eigenvalues and stability; writes OUT/fixed_points.json, OUT/trajectories.png, OUT/eigenvalues.png.",
    )
    p.add_argument("--run", required=True, help="run directory written by rnnjax train")
    p.add_argument("--out", default=None, help="output directory (default RUN/dynamics)")
    p.add_argument("--num-initial", type=int, default=1024, help="initial carries (default 1024)")
    p.add_argument("--noise", type=float, default=0.1, help="std of the noise added to them (default 0.1)")
    p.add_argument("--steps", type=int, default=3000, help="Adam steps of the minimisation (default 3000)")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 0.01)")
    p.add_argument("--tol", type=float, default=None,
                   help="fixed-point tolerance on q (default 1e-8 in float32, 1e-12 in float64)")
    p.add_argument("--merge-tol", type=float, default=1e-3, help="distance under which points merge (default 1e-3)")
    p.add_argument("--sequences", type=int, default=16,
                   help="evaluation sequences plotted and sampled from (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial carries (default 0)")
    p.set_defaults(func=dynamics_command)


def _load_run(run: str):
    """``(config, trainer, params)`` of the finished run in ``run``; ``CLIError`` naming ``--run`` otherwise."""
    import jax

    from rnnjax import checkpoint as ckpt
    from rnnjax.cli.train import CHECKPOINT, _read_json
    from rnnjax.train import RunConfig, build, run_key

    if not os.path.isdir(run):
        raise CLIError(f"--run: {run} holds no rnnjax run (no such directory)")
    try:
        config = RunConfig.from_json(_read_json(os.path.join(run, "config.json"), "--run"))
    except (TypeError, ValueError) as err:
        raise CLIError(f"--run: config.json is not a valid run config ({str(err).splitlines()[0]})") from None
    try:
        trainer = build(config)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise CLIError(f"--run: cannot rebuild the run: {str(err).splitlines()[0]}") from None
    template = jax.jit(trainer.init)(run_key(config.seed))
    try:
        state, _ = ckpt.load(os.path.join(run, CHECKPOINT), template)
    except ckpt.CheckpointError as err:
        raise CLIError(f"--run: {err}") from None
    return config, trainer, state.params


def _check(args) -> None:
    for name in ("num_initial", "sequences"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {getattr(args, name)}")
    if args.steps < 0:
        raise CLIError(f"--steps: expected an integer >= 0, got {args.steps}")
    if not (math.isfinite(args.noise) and args.noise >= 0):
        raise CLIError(f"--noise: expected a non-negative number, got {args.noise}")
    for name in ("lr", "merge_tol") + (("tol",) if args.tol is not None else ()):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise CLIError(f"--{name.replace('_', '-')}: expected a positive number, got {value}")
    out = args.out if args.out is not None else os.path.join(args.run, "dynamics")
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out: {out} is a file, not a directory")


def analyse(args) -> tuple[dict, dict]:
    """Find the fixed points of ``args.run``; returns ``(fixed_points.json dict, figure data)``; writes nothing."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rnnjax import dynamics
    from rnnjax.cli._runflags import as_cli_error
    from rnnjax.train import dynamics_cell

    _check(args)
    config, trainer, params = _load_run(args.run)
    try:
        cell = dynamics_cell(trainer.model, trainer.task, "run")
    except ValueError as err:
        raise as_cli_error(err) from None
    xs = trainer.task.eval_batch().inputs[: args.sequences]
    dtype = jnp.result_type(*jax.tree.leaves(params.cell))
    xs = jnp.asarray(xs, dtype)
    init = dynamics.initial_carries_from_states(cell, params.cell, xs, args.num_initial,
                                                key=jax.random.key(args.seed), noise=args.noise)
    try:
        fp = dynamics.fixed_points(cell, params.cell, initial_carries=init, tol=args.tol, steps=args.steps,
                                   learning_rate=args.lr, merge_tol=args.merge_tol)
    except ValueError as err:
        raise CLIError(f"--tol: {str(err).splitlines()[0]}") from None
    # the visited carries, flat: (sequences, T, n)
    from rnnjax._carry import flatten_carry

    vec0, unflatten = flatten_carry(cell.initial_carry())

    def run(seq):
        def body(c, x):
            new = flatten_carry(cell.step(params.cell, unflatten(c), x)[0])[0]
            return new, new

        return jax.lax.scan(body, vec0.astype(dtype), seq)[1]

    traj = np.asarray(jax.jit(jax.vmap(run))(xs), np.float64)
    result = {"run": os.path.abspath(args.run), "task": config.task, "cell": config.cell, "hidden": config.hidden,
              "input": "zeros", **fp.summary(),
              "settings": {"num_initial": args.num_initial, "noise": args.noise, "steps": args.steps, "lr": args.lr,
                           "merge_tol": args.merge_tol, "sequences": args.sequences, "seed": args.seed}}
    return result, {"traj": traj, "points": np.asarray(fp.points, np.float64), "stable": fp.stable,
                    "eigenvalues": fp.eigenvalues}


def write_figures(out: str, data: dict) -> None:
    """``trajectories.png`` (first two principal components) and ``eigenvalues.png`` (against the unit circle)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj, points, stable, eig = data["traj"], data["points"], data["stable"], data["eigenvalues"]
    flat = traj.reshape(-1, traj.shape[-1])
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    pcs = vt[:2].T if vt.shape[0] >= 2 else np.pad(vt.T, ((0, 0), (0, 2 - vt.shape[0])))
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    for seq in traj:
        z = (seq - mean) @ pcs
        ax.plot(z[:, 0], z[:, 1], lw=0.5, alpha=0.5, color="0.5")
    if len(points):
        z = (points - mean) @ pcs
        ax.scatter(z[stable, 0], z[stable, 1], s=40, c="k", label=f"stable ({int(stable.sum())})", zorder=3)
        ax.scatter(z[~stable, 0], z[~stable, 1], s=40, facecolors="none", edgecolors="r",
                   label=f"unstable ({int((~stable).sum())})", zorder=3)
        ax.legend(fontsize=8)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("hidden trajectories and fixed points", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "trajectories.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    t = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(t), np.sin(t), "k", lw=0.7)
    for e, s in zip(eig, stable):
        ax.scatter(e.real, e.imag, s=12, c="k" if s else "none", edgecolors="k" if s else "r", alpha=0.7)
    ax.set_aspect("equal")
    ax.set_xlabel("Re")
    ax.set_ylabel("Im")
    ax.set_title("step-Jacobian eigenvalues (stable filled, unstable hollow)", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "eigenvalues.png"))
    plt.close(fig)


def dynamics_command(args) -> int:
    """Handler of ``rnnjax dynamics``: every check, then the analysis, then (only then) the files."""
    from rnnjax.rundir import write_json

    result, data = analyse(args)
    out = args.out if args.out is not None else os.path.join(args.run, "dynamics")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise CLIError(f"--out: cannot create {out}: {err.strerror}") from None
    write_json(os.path.join(out, "fixed_points.json"), result)
    write_figures(out, data)
    print(f"{result['count']} fixed points ({result['stable_count']} stable) of {result['cell']} on "
          f"{result['task']}; wrote {out}/fixed_points.json, trajectories.png, eigenvalues.png", file=sys.stderr)
    return 0
