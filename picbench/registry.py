"""A lazy, typed registry: entries are import paths resolved on first use, unknown names get a
"did you mean" suggestion, and third-party packages add entries through an entry-point group."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from picbench.errors import PicbenchError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:attribute"
    summary: str = ""


class Registry(Generic[T]):
    """Name -> lazily imported object. ``kind`` is used in messages ("method", "bench"); with
    ``base``, an entry that is not a subclass of it (with ``instances=True``: not an instance of
    it, e.g. a function checked against a runtime-checkable Protocol) is refused when loaded,
    naming its target."""

    def __init__(self, kind: str, entry_point_group: str | None = None, base: type | None = None, *, instances: bool = False) -> None:
        self.kind = kind
        self.group = entry_point_group
        self.base = base
        self.instances = instances
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, T] = {}
        self._plugins_scanned = False

    def register(self, name: str, target: str, summary: str = "") -> None:
        if name in self._entries and self._entries[name].target != target:
            raise ValueError(f"{self.kind} {name!r} is already registered as {self._entries[name].target}")
        self._entries[name] = Entry(name, target, summary)

    def _scan_plugins(self) -> None:
        if self._plugins_scanned or self.group is None:
            return
        self._plugins_scanned = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._entries:
                self._entries[ep.name] = Entry(ep.name, ep.value, f"plugin from {ep.dist.name if ep.dist else 'unknown'}")

    def names(self, *, registration_order: bool = False) -> list[str]:
        """Every name, sorted; with ``registration_order``, as registered (built-ins in the order
        their package lists them, then plug-ins as found): the order readers' columns follow."""
        self._scan_plugins()
        return list(self._entries) if registration_order else sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        for name in self.names():
            yield self._entries[name]

    def __contains__(self, name: str) -> bool:
        self._scan_plugins()
        return name in self._entries

    def suggest(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names()) or 'none'})"

    def get(self, name: str) -> T:
        self._scan_plugins()
        if name not in self._entries:
            raise UnknownNameError(self.suggest(name))
        if name not in self._loaded:
            module_name, _, attr = self._entries[name].target.partition(":")
            obj = importlib.import_module(module_name)
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
            if self.base is not None and not self._conforms(obj):
                what = f"a {self.base.__name__}" if self.instances else f"a {self.base.__name__} subclass"
                raise PicbenchError(f"{self.kind} {name!r} ({self._entries[name].target}) is not {what}")
            self._loaded[name] = obj  # type: ignore[assignment]
        return self._loaded[name]

    def _conforms(self, obj: object) -> bool:
        assert self.base is not None
        if self.instances:
            return not isinstance(obj, type) and isinstance(obj, self.base)
        return isinstance(obj, type) and issubclass(obj, self.base)

    def summary(self, name: str) -> str:
        """The one-line description an entry was registered (or declared as a plugin) with."""
        self._scan_plugins()
        return self._entries[name].summary
