"""The device flags of the commands that train: ``--devices N`` and the multi-host flags, adapted to ``rnnjax.distributed``.

``add_device_arguments`` adds the flags; ``mesh_from_args`` hands their values
to ``rnnjax.distributed.make_mesh`` and turns its ``ValueError`` (which names
the offending argument) into a ``CLIError`` that names the flag instead.
"""

from __future__ import annotations

import re

from rnnjax.cli import CLIError

# make_mesh's argument -> the flag that sets it (batch_size: the command's own flag, see mesh_from_args).
_FLAGS = {"devices": "--devices", "coordinator_address": "--coordinator", "num_processes": "--num-processes",
          "process_id": "--process-id"}


def add_device_arguments(parser, *, what: str = "batch", multihost: bool = True) -> None:
    """Add ``--devices N`` and (``multihost``) the flags ``--coordinator``, ``--num-processes``, ``--process-id``."""
    parser.add_argument("--devices", type=int, default=1, metavar="N",
                        help=f"split the {what} over N devices (on CPU each device is one core's thread). Default 1")
    if not multihost:
        parser.set_defaults(coordinator=None, num_processes=None, process_id=None)
        return
    parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                        help="multi-host: address of process 0 (with --num-processes and --process-id; or the "
                        "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID variables)")
    parser.add_argument("--num-processes", type=int, default=None, metavar="P", help="multi-host: number of processes")
    parser.add_argument("--process-id", type=int, default=None, metavar="I", help="multi-host: this process, 0..P-1")


def flag_message(message: str, flags: dict[str, str]) -> str:
    """Reword a library error for the command line: each argument name becomes its flag.

    Rewritten are the leading names (``"batch_size: ..."``, ``"a, b: ..."``)
    and mentions of a value (``devices=4`` or ``batch_size 4``, which become
    ``--devices 4`` and ``--batch-size 4``); other words are left alone
    (``"requested 5 devices"``).

    Args:
      message: the first line of a ``ValueError`` from the library.
      flags: argument name -> flag (``{"batch_size": "--batch-size"}``).

    Returns:
      The reworded message.
    """
    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
    head, sep, rest = message.partition(": ")
    if sep and all(name in flags for name in head.split(", ")):
        head = ", ".join(flags[name] for name in head.split(", "))
    else:
        head, sep, rest = "", "", message
    rest = re.sub(rf"\b({names})[= ](?=-?\d)", lambda m: flags[m.group(1)] + " ", rest)
    return head + sep + rest


def mesh_from_args(args, *, batch_size: int | None = None, flag: str = "--batch-size", multihost: bool = True):
    """Join a multi-host run and build the mesh that ``--devices`` asks for; call before any other JAX operation.

    Args:
      args: parsed flags from a parser given ``add_device_arguments``.
      batch_size: the size that must split over the devices, or None.
      flag: the flag that sets ``batch_size`` (named in the error).
      multihost: join a multi-host run from the flags or the ``JAX_COORDINATOR_ADDRESS`` variables.

    Returns:
      ``rnnjax.distributed.make_mesh``'s result: None for ``--devices 1`` in
      a single process, else the ``Mesh``.

    Raises:
      CLIError: naming the flag: ``--devices`` not positive or above the available
        count, ``batch_size`` not divisible, inconsistent multi-host flags.
    """
    from rnnjax import distributed

    try:
        return distributed.make_mesh(args.devices, coordinator_address=args.coordinator,
                                     num_processes=args.num_processes, process_id=args.process_id,
                                     batch_size=batch_size, from_env=multihost)
    except ValueError as err:
        raise CLIError(flag_message(str(err).splitlines()[0], {**_FLAGS, "batch_size": flag})) from None
