"""Regression checks for model releases: compare a run's metrics with a baseline (a leaderboard
CSV or another run's results) and say which metric fell by more than its tolerance.

A regression is a change for the worse: a drop of a higher-is-better metric (similarities, IoU,
AP), a rise of a lower-is-better one (the ``missing`` and ``duplicated`` rates, or a plug-in that
says so); the direction comes from the rows themselves (results.json's ``higher_is_better``, the
CSV's ``lower_is_better`` column). Tolerances are absolute, on the metrics' own scale. With a
significance level, a change beyond the tolerance counts only when a paired bootstrap over the
(sample, seed) items both runs share finds it significant (both sides must be run folders).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from picbench.coverage import ALLOW_HINT, ALLOWED, gate
from picbench.errors import PicbenchError
from picbench.leaderboard import build_leaderboard, higher_is_better, load_rows, metric_columns, row_coverage, row_protocol
from picbench.protocols import ProtocolMismatchError, differing_fields, label, mismatch_message

if TYPE_CHECKING:
    import pandas as pd  # the tables are pandas frames; imported by leaderboard when built

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
    higher_is_better: bool = True
    p_value: float | None = None  # paired bootstrap, when a significance level was asked for
    alpha: float | None = None
    protocols: str = ""  # "run's vs baseline's" where they differ (compared with --allow-protocol-mismatch)

    @property
    def drop(self) -> float:
        """How much worse the run is than the baseline (positive = worse), whatever the direction."""
        return self.baseline - self.candidate if self.higher_is_better else self.candidate - self.baseline

    @property
    def beyond_tolerance(self) -> bool:
        return self.drop > self.tolerance + _FLOAT_SLACK

    @property
    def significant(self) -> bool:
        """Without a level, or for a metric with no paired test (run-level AP), a change counts on its tolerance alone."""
        return self.alpha is None or self.p_value is None or self.p_value < self.alpha

    @property
    def fell(self) -> bool:
        return self.beyond_tolerance and self.significant


@dataclass(frozen=True)
class RegressReport:
    """``blocking``: why the comparison itself cannot pass a release check (a smoke run against
    real numbers, metrics the baseline has and the run lacks), unless explicitly allowed."""

    checks: tuple[MetricCheck, ...]
    warnings: tuple[str, ...]
    blocking: tuple[str, ...] = ()

    @property
    def regressions(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.fell]

    @property
    def passed(self) -> bool:
        return not self.regressions and not self.blocking


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


def load_table(paths: Sequence[str | Path], *, allow_nonfinite: bool = False) -> pd.DataFrame:
    """Results files, run folders or leaderboard CSVs as one leaderboard table (``allow_nonfinite``:
    a CSV's ``inf`` cells are read as absent values instead of refusing the file)."""
    return build_leaderboard(load_rows(paths, allow_nonfinite=allow_nonfinite))


def compare(
    candidate: pd.DataFrame,
    baseline: pd.DataFrame,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    per_metric: Mapping[str, float] | None = None,
    allow_smoke: bool = False,
    allow_missing: bool = False,
    allow_partial: bool = False,
    significance: float | None = None,
    allow_protocol_mismatch: bool = False,
) -> RegressReport:
    """Check every metric that a candidate row and a baseline row of the same method and bench both
    hold. Where the baseline has rows with the run's smoke flag, only those are used. The gate
    fails closed: a smoke run checked against real numbers (or the reverse) and a run lacking
    metrics the baseline holds block the pass unless ``allow_smoke`` / ``allow_missing`` say
    otherwise (then they are warnings); so does a run that covers fewer items, or has more failed
    items, than its baseline row, or whose coverage is unknown, unless ``allow_partial``. Rows of
    different (or unknown) protocols are refused with :class:`ProtocolMismatchError` unless
    ``allow_protocol_mismatch`` (then their checks are labelled with both protocols and a warning
    names the fields). With ``significance`` (a level such as 0.05), every change
    beyond its tolerance is tested with a paired bootstrap; a run-level metric (AP) has no paired
    test and counts on its tolerance alone."""
    if significance is not None and not 0.0 < significance < 1.0:
        raise PicbenchError(f"--significance must lie strictly between 0 and 1, got {significance}")
    per_metric = dict(per_metric or {})
    checks: list[MetricCheck] = []
    warnings: list[str] = []
    blocking: list[str] = []
    baseline_metrics = set(metric_columns(baseline))
    for _, run in candidate.iterrows():
        rows = baseline[(baseline["method"] == run["method"]) & (baseline["bench"] == run["bench"])]
        if rows.empty:
            warnings.append(f"no baseline row for method {run['method']!r} on bench {run['bench']!r}")
            continue
        same_smoke = rows[rows["smoke"] == run["smoke"]]
        if same_smoke.empty:
            kind = "a smoke run (random weights)" if run["smoke"] else "a real run"
            message = (
                f"{run['method']} on {run['bench']}: {kind} is checked against "
                f"{'real' if run['smoke'] else 'smoke'} baseline numbers; the comparison means little"
            )
            (warnings if allow_smoke else blocking).append(message + ("" if allow_smoke else " (pass --allow-smoke to compare anyway)"))
        else:
            rows = same_smoke
        for _, base in rows.iterrows():
            protocols = _protocol_check(run, base, allow_protocol_mismatch, warnings)
            reason = coverage_reason(run, base)
            if reason:
                (warnings if allow_partial else blocking).append(reason + (ALLOWED if allow_partial else ALLOW_HINT))
            if _text(run.get("limit")) and _text(run.get("limit")) != _text(base.get("limit")):
                warnings.append(
                    f"{run['method']} on {run['bench']}: the run used --limit {_text(run.get('limit'))}, the baseline row "
                    f"({base['source']}) {'used --limit ' + _text(base.get('limit')) if _text(base.get('limit')) else 'covers the whole bench'}"
                )
            shared = [m for m in metric_columns(candidate) if m in baseline_metrics and _has(run[m]) and _has(base[m])]
            absent = [m for m in sorted(baseline_metrics) if _has(base[m]) and not (m in run and _has(run[m]))]
            if absent:
                message = f"{run['method']} on {run['bench']}: the run has no value for baseline metric(s) {', '.join(absent)}"
                (warnings if allow_missing else blocking).append(
                    message + ("" if allow_missing else " (pass --allow-missing to check only the shared ones)")
                )
            checks.extend(
                MetricCheck(
                    run["method"],
                    run["bench"],
                    m,
                    float(base[m]),
                    float(run[m]),
                    tolerance_for(m, tolerance, per_metric),
                    str(base["source"]),
                    str(base.get("origin", "")),
                    higher_is_better(m, run, base),
                    protocols=protocols,
                )
                for m in shared
            )
    if not checks:
        pairs = sorted({(r["method"], r["bench"]) for _, r in baseline.iterrows()})
        raise NothingComparableError(
            "nothing to compare: no metric is held by both the run and a baseline row of the same method and bench "
            f"(run: {sorted({(r['method'], r['bench']) for _, r in candidate.iterrows()})}; baseline: {pairs})"
        )
    if significance is not None:
        checks = _tested(checks, candidate, significance)
    checked = {c.metric for c in checks} | {c.metric.split(".", 1)[0] for c in checks}
    unused = sorted(set(per_metric) - checked)
    if unused:
        warnings.append(f"--tolerance-for names metric(s) that were not compared: {', '.join(unused)}")
    return RegressReport(tuple(checks), tuple(warnings), tuple(dict.fromkeys(blocking)))


def coverage_reason(run: Mapping, base: Mapping) -> str | None:
    """Why the run's row cannot be vouched for against the baseline row on coverage (None: it can)."""
    label = f"{run['method']} on {run['bench']} (baseline {base['source']} {base.get('origin', '')})".replace(" )", ")")
    return gate(label, row_coverage(run), row_coverage(base), reported_baseline=base["source"] == "reported")


def _protocol_check(run: pd.Series, base: pd.Series, allow: bool, warnings: list[str]) -> str:
    """Refuse a run row and a baseline row of different or unknown protocols (naming both and the
    fields that differ), or with ``allow`` warn and return the label its checks carry."""
    a, b = row_protocol(run), row_protocol(base)
    fields = differing_fields(a, b)
    if not fields:
        return ""
    message = mismatch_message(
        f"{run['method']} on {run['bench']} (the run)",
        a,
        f"the baseline row ({base['source']}, {base.get('origin') or 'no origin'})",
        b,
        fields,
    )
    if not allow:
        raise ProtocolMismatchError(message)
    warnings.append(message.split("; numbers of different")[0] + "; compared anyway (--allow-protocol-mismatch)")
    return f"{label(a)} vs {label(b)}"


def _tested(checks: list[MetricCheck], candidate: pd.DataFrame, alpha: float) -> list[MetricCheck]:
    """Each check beyond its tolerance with the p-value of a paired bootstrap between the two run folders."""
    from dataclasses import replace

    from picbench.metrics.bootstrap import paired_bootstrap
    from picbench.results import iter_sample_scores

    runs = {(r["method"], r["bench"]): str(r.get("origin", "")) for _, r in candidate.iterrows()}
    loaded: dict[str, list] = {}

    def scores(origin: str, side: str) -> list:
        folder = Path(origin).parent
        if not origin.endswith(".json") or not (folder / "samples.jsonl").is_file():
            raise PicbenchError(
                f"--significance needs per-sample scores on both sides: the {side} {origin or '(no origin)'} is not "
                "a run folder's results.json with samples.jsonl beside it (a leaderboard CSV holds aggregates only)"
            )
        if origin not in loaded:
            loaded[origin] = [score for score, _ in iter_sample_scores(folder)]
        return loaded[origin]

    out = []
    for check in checks:
        if check.beyond_tolerance:
            found = paired_bootstrap(
                scores(runs[(check.method, check.bench)], "run"), scores(check.baseline_origin, "baseline"), [check.metric]
            )
            check = replace(check, p_value=found[0].p_value if found else None)
        out.append(replace(check, alpha=alpha))
    return out


def _text(value: object) -> str:
    return "" if not _has(value) else str(value)


def _has(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
