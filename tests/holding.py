"""Stopping a subprocess at a fixed point instead of at a moment: the command runs picbench's CLI
with one function wrapped so that, after ``after`` calls, its next call creates the file ``held``
and waits until a signal ends the process. A test waits for that file, then signals: what was
finished when the process died never depends on timing (nothing is mid-write then)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

_WRAPPER = """
import importlib, pathlib, time
owner = importlib.import_module({module!r})
for part in {owner_path!r}:
    owner = getattr(owner, part)
real, calls = getattr(owner, {name!r}), []
def held(*args, **kwargs):
    if len(calls) >= {after}:
        pathlib.Path({held!r}).touch()
        while True:
            time.sleep(1)  # until the test's signal
    calls.append(1)
    return real(*args, **kwargs)
setattr(owner, {name!r}, held)
from picbench.cli import main
main()
"""


def cli_holding_after(target: str, after: int, held: Path) -> list[str]:
    """``python -c ...``: the picbench CLI (append its arguments) with ``target``
    (``module:attribute`` or ``module:Class.method``) held after ``after`` calls, announced by
    creating ``held``."""
    module, _, path = target.partition(":")
    *owner_path, name = path.split(".")
    return [sys.executable, "-c", _WRAPPER.format(module=module, owner_path=owner_path, name=name, after=after, held=str(held))]


def wait_until_held(proc: subprocess.Popen, held: Path, guard_s: float = 600) -> None:
    """Return once ``proc`` holds (``held`` exists); fail if it ended first. ``guard_s`` only
    bounds a hang: nothing here depends on how long the process takes."""
    deadline = time.monotonic() + guard_s
    while not held.exists():
        assert proc.poll() is None, f"the process ended (exit {proc.returncode}) before it reached the held call"
        assert time.monotonic() < deadline, f"the process did not reach the held call within {guard_s} s (a hang)"
        time.sleep(0.02)
