"""Run directories: one run per directory, atomic JSON files, logs cut back to a checkpoint.

``rnnjax train`` and ``rnnjax sweep`` hold ``RunLock(out)`` for the whole run:
an exclusive ``fcntl.flock`` on the directory itself, taken before the first
byte is written and released by the kernel when the process ends (however it
ends). A second process on the same directory fails at once with
``DirectoryBusy``, whose message names the directory and the holder (pid,
host and start time, which the holder records in ``DIR/.lock`` once it has
passed its checks). Locking the directory, not a file in it, means a refused
process changes nothing there.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import socket
import time

HOLDER = ".lock"  # holder record (pid, host, start time); the lock itself is the directory's flock


class DirectoryBusy(Exception):
    """Another process holds the run directory."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a newly created file gets under the process umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


class RunLock:
    """An exclusive lock on a run directory, held until ``release`` (or process exit).

    Args:
      path: the directory; created (with parents) if missing. A directory this
        lock created is removed again on ``release`` if the run never recorded
        itself and left it empty (a run refused by a later check leaves no trace).

    Raises:
      DirectoryBusy: another process holds it (message names the directory and the holder).
      OSError: the directory cannot be created or opened.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.created = not os.path.exists(self.path)
        os.makedirs(self.path, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(self._fd)
            self._fd = None
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DirectoryBusy(f"{self.path} is in use by another rnnjax run ({self.holder()})") from None
            raise
        self._recorded = False

    def holder(self) -> str:
        """Who holds the directory: its record in ``DIR/.lock``, else the pid the kernel lists for the lock."""
        try:
            with open(os.path.join(self.path, HOLDER)) as f:
                info = json.load(f)
            return f"held by pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            pass
        pid = _flock_holder(self.path)
        return f"held by pid {pid} on {socket.gethostname()}" if pid else "holder unknown"

    def record(self) -> None:
        """Write the holder record (call once every check has passed: it is the run's first write)."""
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
        write_json(os.path.join(self.path, HOLDER), info)
        self._recorded = True

    def release(self) -> None:
        """Remove the holder record (if written) and release the lock."""
        if self._fd is None:
            return
        if self._recorded:
            try:
                os.unlink(os.path.join(self.path, HOLDER))
            except FileNotFoundError:
                pass
        elif self.created and not os.listdir(self.path):
            os.rmdir(self.path)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _flock_holder(path: str) -> int | None:
    """The pid holding a ``flock`` on directory ``path``, from Linux's ``/proc/locks`` (None elsewhere)."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (blocked waiters are marked "->")
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            try:
                return int(fields[4])
            except ValueError:
                continue
    return None


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Delete the temporary files that an interrupted atomic write of ``path`` left behind; return them.

    Covers ``write_json``'s ``PATH.tmp-PID`` and ``rnnjax.checkpoint.save``'s
    ``PATH.XXXX.tmp``. Only call it while holding the directory's ``RunLock``
    (no other writer can be mid-write then).
    """
    path = os.fspath(path)
    stale = glob.glob(glob.escape(path) + ".tmp-*") + glob.glob(glob.escape(path) + ".*.tmp")
    for name in stale:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    return stale


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as JSON atomically (temporary file, ``fsync``, ``os.replace``)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The complete JSON lines of ``path`` (a line cut short by a kill is skipped); [] if missing."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_jsonl(path: str | os.PathLike, max_step: int) -> None:
    """Keep the lines of ``path`` with ``step <= max_step`` (those logged up to a checkpoint), atomically."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return
    kept = [json.dumps(row) + "\n" for row in read_jsonl(path) if row.get("step", 0) <= max_step]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


__all__ = ["DirectoryBusy", "HOLDER", "RunLock", "file_mode", "read_jsonl", "remove_stale_temporaries",
           "truncate_jsonl", "write_json"]
