"""Stopping a subprocess at a fixed point instead of at a moment: the command runs picbench's CLI
with one function wrapped so that, after ``after`` calls, its next call waits until a signal ends
the process. A test kills it there, so what was finished when it died never depends on timing."""

from __future__ import annotations

import sys

_WRAPPER = """
import importlib, time
owner = importlib.import_module({module!r})
for part in {owner_path!r}:
    owner = getattr(owner, part)
real, calls = getattr(owner, {name!r}), []
def held(*args, **kwargs):
    if len(calls) >= {after}:
        while True:
            time.sleep(1)  # until the test's signal
    calls.append(1)
    return real(*args, **kwargs)
setattr(owner, {name!r}, held)
from picbench.cli import main
main()
"""


def cli_holding_after(target: str, after: int) -> list[str]:
    """``python -c ...``: the picbench CLI (append its arguments) with ``target``
    (``module:attribute`` or ``module:Class.method``) held after ``after`` calls."""
    module, _, path = target.partition(":")
    *owner_path, name = path.split(".")
    return [sys.executable, "-c", _WRAPPER.format(module=module, owner_path=owner_path, name=name, after=after)]
