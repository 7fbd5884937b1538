"""SIGTERM (what SLURM, Kubernetes and docker send before killing) handled like Ctrl-C: it
raises :class:`Terminated`, a ``KeyboardInterrupt``, in the main thread, so every ``finally``
and rollback runs, finished work stays in the store and the CLI can say so and exit 143
(128 + SIGTERM, the code a shell reports for a process the signal killed)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"received signal {signal.Signals(signum).name}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (only the main thread can install it;
    elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
