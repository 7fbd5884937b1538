"""Regression checks for model releases: compare a run's metrics with a baseline (a leaderboard
CSV or another run's results) and say which metric fell by more than its tolerance.

Every picbench metric is higher-is-better (similarities, IoU, AP), so a regression is a drop.
Tolerances are absolute, on the metrics' own 0..1 scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from picbench.errors import PicbenchError
from picbench.leaderboard import build_leaderboard, load_rows, metric_columns

DEFAULT_TOLERANCE = 0.01
_FLOAT_SLACK = 1e-9  # 0.84 - 0.83 is 0.01000000000000001: a drop of exactly the tolerance passes


class NothingComparableError(PicbenchError):
    """The run and the baseline share no (method, bench) row with a metric both hold."""


@dataclass(frozen=True)
class MetricCheck:
    """One metric of one (method, bench) row, run against baseline."""

    method: str
    bench: str
    metric: str
    baseline: float
    candidate: float
    tolerance: float
    baseline_source: str
    baseline_origin: str

    @property
    def drop(self) -> float:
        return self.baseline - self.candidate

    @property
    def fell(self) -> bool:
        return self.drop > self.tolerance + _FLOAT_SLACK


@dataclass(frozen=True)
class RegressReport:
    checks: tuple[MetricCheck, ...]
    warnings: tuple[str, ...]

    @property
    def regressions(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.fell]

    @property
    def passed(self) -> bool:
        return not self.regressions


def parse_tolerances(specs: Sequence[str]) -> dict[str, float]:
    """``["clip_i=0.005", "iou.multi=0.02"]`` -> ``{"clip_i": 0.005, "iou.multi": 0.02}``."""
    tolerances: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        try:
            tolerance = float(value)
        except ValueError:
            tolerance = math.nan
        if not sep or not name.strip() or not math.isfinite(tolerance) or tolerance < 0:
            raise PicbenchError(f"tolerance {spec!r} is not METRIC=NUMBER with a number >= 0 (e.g. clip_i=0.005)")
        tolerances[name.strip()] = tolerance
    return tolerances


def tolerance_for(metric: str, default: float, per_metric: Mapping[str, float]) -> float:
    """The exact key's tolerance, else its base metric's (``clip_i`` covers ``clip_i.multi``), else the default."""
    if metric in per_metric:
        return per_metric[metric]
    return per_metric.get(metric.split(".", 1)[0], default)


def load_table(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Results files, run folders or leaderboard CSVs as one leaderboard table."""
    return build_leaderboard(load_rows(paths))


def compare(
    candidate: pd.DataFrame,
    baseline: pd.DataFrame,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    per_metric: Mapping[str, float] | None = None,
) -> RegressReport:
    """Check every metric that a candidate row and a baseline row of the same method and bench both
    hold. Where the baseline has rows with the run's smoke flag, only those are used; a smoke run
    checked against real numbers (or the reverse) is warned about, not refused."""
    per_metric = dict(per_metric or {})
    checks: list[MetricCheck] = []
    warnings: list[str] = []
    baseline_metrics = set(metric_columns(baseline))
    for _, run in candidate.iterrows():
        rows = baseline[(baseline["method"] == run["method"]) & (baseline["bench"] == run["bench"])]
        if rows.empty:
            warnings.append(f"no baseline row for method {run['method']!r} on bench {run['bench']!r}")
            continue
        same_smoke = rows[rows["smoke"] == run["smoke"]]
        if same_smoke.empty:
            kind = "a smoke run (random weights)" if run["smoke"] else "a real run"
            warnings.append(
                f"{run['method']} on {run['bench']}: {kind} is checked against "
                f"{'real' if run['smoke'] else 'smoke'} baseline numbers; the comparison means little"
            )
        else:
            rows = same_smoke
        for _, base in rows.iterrows():
            if _text(run.get("limit")) and _text(run.get("limit")) != _text(base.get("limit")):
                warnings.append(
                    f"{run['method']} on {run['bench']}: the run used --limit {_text(run.get('limit'))}, the baseline row "
                    f"({base['source']}) {'used --limit ' + _text(base.get('limit')) if _text(base.get('limit')) else 'covers the whole bench'}"
                )
            shared = [m for m in metric_columns(candidate) if m in baseline_metrics and _has(run[m]) and _has(base[m])]
            absent = [m for m in sorted(baseline_metrics) if _has(base[m]) and not (m in run and _has(run[m]))]
            if absent:
                warnings.append(f"{run['method']} on {run['bench']}: the run has no value for baseline metric(s) {', '.join(absent)}")
            checks.extend(
                MetricCheck(run["method"], run["bench"], m, float(base[m]), float(run[m]), tolerance_for(m, tolerance, per_metric),
                            str(base["source"]), str(base.get("origin", "")))
                for m in shared
            )
    if not checks:
        pairs = sorted({(r["method"], r["bench"]) for _, r in baseline.iterrows()})
        raise NothingComparableError(
            "nothing to compare: no metric is held by both the run and a baseline row of the same method and bench "
            f"(run: {sorted({(r['method'], r['bench']) for _, r in candidate.iterrows()})}; baseline: {pairs})"
        )
    checked = {c.metric for c in checks} | {c.metric.split(".", 1)[0] for c in checks}
    unused = sorted(set(per_metric) - checked)
    if unused:
        warnings.append(f"--tolerance-for names metric(s) that were not compared: {', '.join(unused)}")
    return RegressReport(tuple(checks), tuple(warnings))


def _text(value: object) -> str:
    return "" if not _has(value) else str(value)


def _has(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
