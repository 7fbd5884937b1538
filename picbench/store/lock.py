"""One worker per run part: a lock (:mod:`picbench.locks`) per (run folder, shard) so that two
``picbench run`` commands on one folder do not both generate and score everything.

The lock file is ``OUT/.lock-<i>of<n>``. Shards of one run (``--shard i/n``, torchrun ranks) take
different parts, so they run side by side.
"""

from __future__ import annotations

from pathlib import Path

from picbench.locks import FolderLock, FolderLockedError


class RunLockedError(FolderLockedError):
    """Another process holds the lock of this run part."""


class RunLock(FolderLock):
    """The exclusive lock of one part of the run in ``out_dir``, or :class:`RunLockedError`
    naming the process that holds it."""

    error = RunLockedError

    def __init__(self, out_dir: str | Path, part: str = "0/1") -> None:
        super().__init__(
            out_dir,
            name=f".lock-{part.replace('/', 'of')}",
            verb="picbench run",
            what=f"part {part}",
            remedy="Wait for that run to finish (then rerun to resume), or choose another --out",
        )
        self.out_dir, self.part = self.folder, part
