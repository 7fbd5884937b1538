"""``picbench validate BENCH``: the integrity report; exit code 1 when any problem is an error, 2 when
the bench cannot be read at all (the table of :mod:`picbench.cli.errors`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from picbench.cli.app import app, console
from picbench.cli.errors import EXIT_CHECK_FAILED, fail
from picbench.cli.output import emit_json
from picbench.errors import PicbenchError
from picbench.validate import ValidationReport, validate_named


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
