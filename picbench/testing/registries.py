"""Which entries a suite runs over, and how a failure names the entry it checked."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from typing import Any, TypeVar

from picbench.registry import Registry

T = TypeVar("T")


def registered(registry: Registry[Any], distribution_name: str | None = None) -> list[str]:
    """Every name in ``registry`` (built-ins and installed plug-ins), or only those a distribution
    declares in the registry's entry-point group (a plug-in author's own entries)."""
    if distribution_name is None:
        return registry.names()
    try:
        declared = distribution(distribution_name).entry_points
    except PackageNotFoundError:
        raise AssertionError(f"distribution {distribution_name!r} is not installed (no *.dist-info on sys.path)") from None
    return sorted(ep.name for ep in declared if ep.group == registry.group)


def parametrize(registry: Registry[Any], distribution_name: str | None = None, argname: str = "name") -> Any:
    """``@parametrize(METRICS)`` or ``@parametrize(METRICS, "my-plugin")``: a pytest parametrization
    over :func:`registered` names, one test id per name."""
    import pytest

    names = registered(registry, distribution_name)
    return pytest.mark.parametrize(argname, names, ids=names)


def describe(registry: Registry[Any], name: str) -> str:
    """``metric 'iou' (picbench.metrics.layout:IoU)``: how every failure message starts."""
    targets = {e.name: e.target for e in registry.entries()}
    return f"{registry.kind} {name!r} ({targets.get(name, 'not registered')})"


def resolve(registry: Registry[T], entry: str | Any) -> tuple[str, Any, str]:
    """(name, loaded object, label) of a registered name or of the object itself. An entry that
    cannot be imported or has the wrong type fails the suite, naming it."""
    if not isinstance(entry, str):
        name = getattr(entry, "name", "") or getattr(entry, "__name__", "")
        return name, entry, f"{registry.kind} {name!r} ({entry.__module__}:{entry.__qualname__})"
    label = describe(registry, entry)
    if entry not in registry:
        raise AssertionError(f"{label}: not registered ({registry.suggest(entry)})")
    try:
        return entry, registry.get(entry), label
    except Exception as exc:
        raise AssertionError(f"{label} cannot be loaded: {type(exc).__name__}: {exc}") from exc


def require(condition: bool, label: str, message: str) -> None:
    """An assertion that survives ``python -O`` and always names the entry."""
    if not condition:
        raise AssertionError(f"{label}: {message}")
