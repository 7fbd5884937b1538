"""SIGINT and SIGTERM (what SLURM, Kubernetes and docker send before killing), handled one way
by every long verb: finished work is saved, the verb says so and exits 130 (Ctrl-C) or 143
(SIGTERM; 128 + the signal, the code a shell reports for a process the signal killed).

Two forms of the same handling:

* :func:`sigterm_as_interrupt` (``run``, ``data build bmpds``): SIGTERM raises
  :class:`Terminated`, a ``KeyboardInterrupt``, in the main thread, so every ``finally`` and
  rollback runs and finished records stay in the store;
* :func:`stop_requests` (``train``): either signal only raises a flag that the loop reads between
  steps, so it stops at a step boundary with a whole checkpoint; a second signal stops at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


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


class StopRequest:
    """Set by the first SIGINT or SIGTERM received inside :func:`stop_requests`."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second signal: stop now
            raise Terminated(f"received signal {signal.Signals(signum).name} twice") if signum == signal.SIGTERM else KeyboardInterrupt
        self.signal = signal.Signals(signum)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal, 130) if self.signal is not None else 0


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """While inside, SIGINT and SIGTERM set the yielded :class:`StopRequest` (in the main thread;
    elsewhere it is never set)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
