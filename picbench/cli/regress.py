"""``picbench regress``: fail a build when a model release loses identity or position quality.

Exit codes (the table of :mod:`picbench.cli.errors`): 0 no metric fell by more than its tolerance;
1 at least one did (a table says which), or the check fails closed (a smoke run against real
numbers without ``--allow-smoke``, baseline metrics the run lacks without ``--allow-missing``, a
run covering fewer items or with more failures than its baseline, or of unknown coverage, without
``--allow-partial``);
2 the input is unusable (unreadable files, non-finite values without ``--allow-nonfinite``, bad
tolerances, nothing comparable, rows of different or unknown protocols without
``--allow-protocol-mismatch``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from picbench.cli.app import app, console
from picbench.cli.errors import EXIT_CHECK_FAILED, fail, warn
from picbench.cli.output import append_step_summary, emit_json, human_output_to_stderr, markdown_table
from picbench.errors import PicbenchError
from picbench.regress import DEFAULT_TOLERANCE, MetricCheck, RegressReport, compare, load_table, parse_tolerances


@app.command("regress")
def regress(
    results: Annotated[list[Path], typer.Argument(help="the run to check: results.json files, run folders or a leaderboard CSV")],
    baseline: Annotated[list[Path], typer.Option("--baseline", "-b", help="leaderboard CSV or results to compare against (repeatable)")],
    tolerance: Annotated[float, typer.Option(min=0.0, help="largest allowed absolute drop of any metric")] = DEFAULT_TOLERANCE,
    tolerance_for: Annotated[
        list[str] | None,
        typer.Option(
            "--tolerance-for", help="per-metric tolerance METRIC=NUMBER, e.g. clip_i=0.005 (clip_i also covers clip_i.single/.multi)"
        ),
    ] = None,  # noqa: UP007
    show_all: Annotated[bool, typer.Option("--show-all", help="list every compared metric, not only those that fell")] = False,
    allow_smoke: Annotated[
        bool, typer.Option("--allow-smoke", help="compare a smoke run with real numbers (or the reverse) instead of failing")
    ] = False,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="pass when the run lacks metrics the baseline has, checking only the shared ones")
    ] = False,
    allow_partial: Annotated[
        bool,
        typer.Option("--allow-partial", help="pass a run that covers fewer items or has more failures than the baseline (labelled)"),
    ] = False,
    allow_nonfinite: Annotated[
        bool, typer.Option("--allow-nonfinite", help="read inf cells of a CSV as absent values instead of refusing the file")
    ] = False,
    allow_protocol_mismatch: Annotated[
        bool,
        typer.Option(
            "--allow-protocol-mismatch",
            help="compare rows scored under different (or unknown) protocols, e.g. a paper's reported numbers; each check is labelled",
        ),
    ] = False,
    significance: Annotated[
        float | None,
        typer.Option(
            "--significance",
            help="a change beyond its tolerance counts only if a paired bootstrap gives p < ALPHA (both sides run folders)",
        ),
    ] = None,  # noqa: UP007
    as_json: Annotated[bool, typer.Option("--json", help="print the verdict and every check as JSON on stdout")] = False,
) -> None:
    """Compare every metric the run and the baseline share; exit 1 if any fell by more than its
    tolerance, or if the comparison cannot vouch for a release (smoke against real numbers,
    baseline metrics the run lacks, a run covering fewer items than its baseline) unless allowed.
    With GITHUB_STEP_SUMMARY set, the verdict is appended to it as a Markdown table."""
    with human_output_to_stderr(as_json):
        report = _check(
            results,
            baseline,
            allow_nonfinite=allow_nonfinite,
            tolerance_for=tolerance_for,
            tolerance=tolerance,
            allow_smoke=allow_smoke,
            allow_missing=allow_missing,
            allow_partial=allow_partial,
            allow_protocol_mismatch=allow_protocol_mismatch,
            significance=significance,
        )
        _print(report, show_all=show_all, significance=significance)
    append_step_summary(markdown_summary(report))
    if as_json:
        emit_json(report_document(report))
    if not report.passed:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _check(
    results: list[Path], baseline: list[Path], *, allow_nonfinite: bool, tolerance_for: list[str] | None, **options: Any
) -> RegressReport:
    """The comparison (``options``: :func:`picbench.regress.compare`'s), or exit 2 on unusable input."""
    try:
        report = compare(
            load_table(results, allow_nonfinite=allow_nonfinite),
            load_table(baseline, allow_nonfinite=allow_nonfinite),
            per_metric=parse_tolerances(tolerance_for or []),
            **options,
        )
    except PicbenchError as exc:
        fail(exc)
    return report


def _print(report: RegressReport, *, show_all: bool, significance: float | None) -> None:
    """The tables and the verdict line for people."""
    for warning in report.warnings:
        warn(warning)
    shown = report.checks if show_all else report.regressions
    if shown:
        console.print(checks_table(shown, title="metrics compared" if show_all else "metrics that fell by more than their tolerance"))
    chance = [c for c in report.checks if c.beyond_tolerance and not c.significant]
    if chance and not show_all:
        console.print(checks_table(chance, title=f"beyond their tolerance but not significant at {significance:g} (not regressions)"))
    n_rows = len({(c.method, c.bench) for c in report.checks})
    if report.passed:
        console.print(
            f"[bold green]pass:[/] {len(report.checks)} metric(s) over {n_rows} method/bench row(s); none fell by more than its tolerance"
        )
        return
    for reason in report.blocking:
        console.print(f"[bold red]not comparable:[/] {escape(reason)}")
    if report.regressions:
        console.print(
            f"[bold red]regression:[/] {len(report.regressions)} of {len(report.checks)} metric(s) fell by more than their tolerance"
        )


def check_record(c: MetricCheck) -> dict[str, Any]:
    """One check as JSON: the row's fields and the verdict derived from them."""
    return {**asdict(c), "drop": c.drop, "beyond_tolerance": c.beyond_tolerance, "significant": c.significant, "fell": c.fell}


def report_document(report: RegressReport) -> dict[str, Any]:
    """``regress --json``: the verdict, why it cannot pass (``blocking``), warnings and every check."""
    return {
        "verdict": "pass" if report.passed else "fail",
        "passed": report.passed,
        "regressions": len(report.regressions),
        "blocking": list(report.blocking),
        "warnings": list(report.warnings),
        "checks": [check_record(c) for c in report.checks],
    }


def markdown_summary(report: RegressReport) -> str:
    """The verdict and every compared metric as Markdown (GitHub's job summary)."""
    verdict = "pass" if report.passed else f"FAIL: {len(report.regressions)} regression(s), {len(report.blocking)} blocking reason(s)"
    lines = [f"### picbench regress: {verdict}", ""]
    lines += [f"- not comparable: {reason}" for reason in report.blocking]
    lines += [f"- warning: {warning}" for warning in report.warnings]
    rows = [
        (
            c.method,
            c.bench,
            c.metric,
            "higher" if c.higher_is_better else "lower",
            f"{c.baseline:.4f}",
            f"{c.candidate:.4f}",
            f"{c.candidate - c.baseline:+.4f}",
            f"{c.tolerance:g}",
            "FELL" if c.fell else "ok",
        )
        for c in report.checks
    ]
    table = markdown_table(("method", "bench", "metric", "better", "baseline", "run", "change", "tol", "status"), rows)
    return "\n".join(lines) + "\n\n" + table


def checks_table(checks: list[MetricCheck], title: str) -> Table:
    view = Table(title=title)
    tested = any(c.alpha is not None for c in checks)
    labelled = any(c.protocols for c in checks)
    columns = (
        "method",
        "bench",
        "metric",
        "better",
        "baseline",
        "run",
        "change",
        "tol",
        *(("p",) if tested else ()),
        "source",
        *(("protocols",) if labelled else ()),
    )
    for column in columns:
        view.add_column(column, justify="right" if column in ("baseline", "run", "change", "tol", "p") else "left", overflow="fold")
    for c in checks:
        style = "bold red" if c.fell else "yellow" if c.beyond_tolerance else "green"
        p = (("n/a" if c.p_value is None else f"{c.p_value:.3f}"),) if tested else ()
        view.add_row(
            c.method,
            c.bench,
            c.metric,
            "higher" if c.higher_is_better else "lower",
            f"{c.baseline:.4f}",
            f"{c.candidate:.4f}",
            f"[{style}]{c.candidate - c.baseline:+.4f}[/]",
            f"{c.tolerance:g}",
            *p,
            c.baseline_source,
            *((escape(c.protocols or "same"),) if labelled else ()),
        )
    origins = sorted({c.baseline_origin.rpartition(":")[0] or c.baseline_origin for c in checks if c.baseline_origin})
    if origins:
        view.caption = "baseline from " + ", ".join(origins)
    return view
