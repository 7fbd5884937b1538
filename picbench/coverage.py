"""Coverage: how many of the items a run was asked for it actually scored. Aggregates over 4 of
548 items look like any other numbers, so every verdict (``run``, ``regress``, ``compare``, the
report, the leaderboards) reads coverage next to them and a gate fails closed on a candidate that
covers less than its baseline.

An item is one (sample, seed). It is *scored* when its image was generated and scored (it enters
the aggregates); it is *failed* when its score records any failure (the metric engine's
``n_failures``: no image, an undecodable image, but also a detector answer that could not be
parsed or a metric that could not be computed on it). An unscored item is always failed; a failed
item may still be scored. A run is *partial* when it scored fewer items than expected. A results
file written before coverage was recorded has unknown coverage (``None``), which no gate vouches for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picbench.errors import ResultFormatError

PARTIAL_BANNER = "PARTIAL RUN: its aggregates cover only some of the items it was asked for"
ALLOW_HINT = " (pass --allow-partial to accept it, labelled partial)"
ALLOWED = " (allowed by --allow-partial)"


@dataclass(frozen=True)
class Counts:
    """Expected, scored and failed (sample, seed) items of a run or of one split (see the module docstring)."""

    expected: int
    scored: int
    failed: int

    @property
    def partial(self) -> bool:
        return self.scored < self.expected

    def text(self) -> str:
        return f"scored {self.scored} of {self.expected}" + (f" ({self.failed} with failures)" if self.failed else "")

    def to_dict(self) -> dict[str, int]:
        return {"expected": self.expected, "scored": self.scored, "failed": self.failed}


@dataclass(frozen=True)
class Coverage(Counts):
    """The run's counts and the same per split (``single``, ``multi``) where the split occurs."""

    splits: Mapping[str, Counts] = field(default_factory=dict)

    def summary(self, unit: str = "") -> str:
        """``scored k of n (f with failures)UNIT``, each split's in parentheses where there are two."""
        splits = "; ".join(f"{name}: {counts.text()}" for name, counts in self.splits.items())
        return self.text() + unit + (f" ({splits})" if len(self.splits) > 1 else "")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "partial": self.partial, "splits": {k: v.to_dict() for k, v in self.splits.items()}}

    @classmethod
    def from_dict(cls, d: Any, *, file: str | Path | None = None) -> Coverage:
        """The ``coverage`` field of a results file; a bad field raises naming file and field."""
        if not isinstance(d, Mapping):
            raise ResultFormatError(f"must be an object, got {type(d).__name__}", file=file or "results", field="coverage")
        splits = d.get("splits", {})
        if not isinstance(splits, Mapping):
            raise ResultFormatError(f"must be an object, got {type(splits).__name__}", file=file or "results", field="coverage.splits")
        total = _counts(d, "coverage", file)
        return cls(
            total.expected, total.scored, total.failed, {str(k): _counts(v, f"coverage.splits.{k}", file) for k, v in splits.items()}
        )


def _counts(d: Any, where: str, file: str | Path | None) -> Counts:
    if not isinstance(d, Mapping):
        raise ResultFormatError(f"must be an object, got {type(d).__name__}", file=file or "results", field=where)
    values = {}
    for key in ("expected", "scored", "failed"):
        value = d.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ResultFormatError(f"must be an integer >= 0, got {value!r}", file=file or "results", field=f"{where}.{key}")
        values[key] = value
    expected, scored, failed = values["expected"], values["scored"], values["failed"]
    if scored > expected or failed > expected or expected - scored > failed:
        raise ResultFormatError(
            f"scored {scored} and failed {failed} do not fit expected {expected} (every unscored item is a failed one)",
            file=file or "results",
            field=where,
        )
    return Counts(**values)


def measure(items: Iterable[tuple[str, bool, bool]]) -> Coverage:
    """Coverage of (split, scored, failed) per item, in the order the run lists them."""
    by_split: dict[str, list[int]] = {}
    for split, scored, failed in items:
        counts = by_split.setdefault(split, [0, 0, 0])
        counts[0] += 1
        counts[1] += bool(scored)
        counts[2] += bool(failed) or not scored
    splits = {name: Counts(*counts) for name, counts in by_split.items()}
    return Coverage(*(sum(getattr(c, k) for c in splits.values()) for k in ("expected", "scored", "failed")), splits)


def gate(label: str, candidate: Counts | None, baseline: Counts | None, *, reported_baseline: bool = False) -> str | None:
    """Why ``candidate`` cannot be vouched for against ``baseline`` (None: it can): its coverage or
    the baseline's is unknown, or it scored fewer items or failed more than the baseline. A
    ``reported_baseline`` (a paper's number, of the whole bench) has no coverage: the candidate
    must then be complete. Callers add :data:`ALLOW_HINT` or :data:`ALLOWED`."""
    if candidate is None:
        return f"{label}: the candidate's coverage is unknown (its results.json predates coverage records); rerun it"
    if reported_baseline:
        if candidate.partial:
            return f"{label}: the candidate is partial, {candidate.text()} items, against a reported number of the whole bench"
        return None
    if baseline is None:
        return f"{label}: the baseline's coverage is unknown (its results predate coverage records); rerun it"
    if candidate.scored < baseline.scored or candidate.failed > baseline.failed:
        return (
            f"{label}: the candidate {candidate.text()} items, the baseline {baseline.text()}: it covers fewer items or has more failures"
        )
    return None
