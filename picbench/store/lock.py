"""One worker per run part: a lock file per (run folder, shard) so that two ``picbench run``
commands on one folder do not both generate and score everything.

The lock is an advisory ``flock`` on ``OUT/.lock-<i>of<n>``, held for the life of the run and
released by the kernel when the process dies however it dies (a SIGKILL leaves no stale lock).
Shards of one run (``--shard i/n``, torchrun ranks) take different parts, so they run side by
side. The file records who holds it, so the refusal can say which process to wait for.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Self

from picbench.errors import PicbenchError


class RunLockedError(PicbenchError):
    """Another process holds the lock of this run part."""


class RunLock:
    """Context manager: the exclusive lock of one part of the run in ``out_dir``, or
    :class:`RunLockedError` naming the process that holds it."""

    def __init__(self, out_dir: str | Path, part: str = "0/1") -> None:
        self.out_dir = Path(out_dir)
        self.part = part
        self.path = self.out_dir / f".lock-{part.replace('/', 'of')}"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.out_dir} (part {self.part}) is being worked on by {holder}; nothing was done. Wait for that run "
                "to finish (then rerun to resume), or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"picbench run pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
