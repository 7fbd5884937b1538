"""``picbench validate BENCH``: the integrity report; exit code 1 when any problem is an error, 2 when
the bench cannot be read at all (the table of :mod:`picbench.cli.errors`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from picbench.cli.app import app, console
from picbench.cli.errors import EXIT_CHECK_FAILED, fail
from picbench.cli.output import emit_json
from picbench.errors import PicbenchError
from picbench.problems import Problem
from picbench.validate import ValidationReport, validate_bench, validate_bench_file


def validate_named(name: str, data_dir: str | Path | None = None, *, check_images: bool = True) -> ValidationReport:
    """Validate a pair set, a registered bench, a built bench or a .jsonl path. Files are checked
    raw; a loader's warnings become warnings of the report and its failure an error, never a crash.
    The verb's dispatch lives here, above both the bench validator and the pair sets it tells apart."""
    from picbench.benches import BENCHES, built_benches, load_bench
    from picbench.pairs import is_pair_set, validate_pairs
    from picbench.paths import find_data_dir

    if is_pair_set(name):  # its own data root, checked with the trainer's rules
        return validate_pairs(name, check_images=check_images)
    root = find_data_dir(data_dir)
    assert root is not None
    built = built_benches()
    if name.endswith(".jsonl"):
        return validate_bench_file(name, root, check_images=check_images)
    if name in built and name not in BENCHES:
        return validate_bench_file(built[name], root, check_images=check_images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            bench = load_bench(name, root)
        except PicbenchError as exc:
            report = ValidationReport(name)
            report.problems.append(Problem("error", "load-failed", str(exc)))
            return report
    report = validate_bench(bench, check_images=check_images)
    report.problems[:0] = [Problem("warning", "loader-warning", str(w.message)) for w in caught]
    return report


def print_report(report: ValidationReport) -> None:
    if report.problems:
        table = Table(title=f"problems in {report.bench}")
        for column in ("severity", "code", "where", "message"):
            table.add_column(column, overflow="fold")
        for p in report.problems:
            style = "red" if p.severity == "error" else "yellow"
            table.add_row(f"[{style}]{p.severity}[/{style}]", p.code, escape(p.where()), escape(p.message))
        console.print(table)
        counts = ", ".join(f"{code}: {n}" for code, n in sorted(report.counts().items()))
        console.print(f"by code: {counts}")
    verdict = "[green]OK[/green]" if report.ok else "[red]FAILED[/red]"
    console.print(
        f"{verdict} {escape(report.bench)}: {report.n_samples} samples, {report.n_images} images, "
        f"{len(report.errors)} errors, {len(report.warnings)} warnings"
    )


@app.command("validate")
def validate(
    bench: str = typer.Argument(..., help="a bench name (registered or built) or a path to a .jsonl bench file"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="data root (default: $PICBENCH_DATA_DIR or $PICBENCH_HOME/data)"),
    images: bool = typer.Option(True, "--images/--no-images", help="decode every image (slower, catches truncated files)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON instead of tables"),
) -> None:
    """Check a bench before scoring: every problem listed, with its severity."""
    try:
        report = validate_named(bench, data_dir, check_images=images)
    except PicbenchError as exc:
        fail(exc)
    if as_json:
        emit_json(report.to_dict())
    else:
        print_report(report)
    if not report.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)
