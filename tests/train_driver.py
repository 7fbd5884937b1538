"""``picbench train ...`` with a deterministic trigger for the signal tests, no timing involved:

    python tests/train_driver.py SIGNAL STEP train CONFIG [options]

runs the CLI and, right after step STEP is logged, the loop's own ``on_step`` hook sends the
process SIGNAL (``TERM`` or ``INT``), as SLURM or a user would.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from picbench.cli import main
from picbench.reference_impl.training import loop

name, at, *args = sys.argv[1:]
build = loop.Trainer.__init__


def with_trigger(self: loop.Trainer, *a: Any, **kw: Any) -> None:
    build(self, *a, **kw)

    def hook(record: dict) -> None:
        if record["step"] == int(at):
            os.kill(os.getpid(), getattr(signal, f"SIG{name}"))

    self.on_step = hook


loop.Trainer.__init__ = with_trigger
sys.argv = ["picbench", *args]
main()
