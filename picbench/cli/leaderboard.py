"""``picbench leaderboard export|show``: merge run results into a leaderboard CSV (or a sortable
HTML page), or print one. pandas is imported inside the verbs, not by ``picbench --help``."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from picbench.cli.app import app, console
from picbench.cli.errors import fail, warn
from picbench.errors import PicbenchError

if TYPE_CHECKING:
    import pandas as pd

leaderboard_app = typer.Typer(help="Leaderboard CSVs: a row per method and bench, a column per metric.", no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")


class Format(str, Enum):
    csv = "csv"
    html = "html"


@leaderboard_app.command("export")
def export(
    results: Annotated[list[Path], typer.Argument(help="results.json files, run folders, or leaderboard CSVs to merge")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the file to write, e.g. leaderboards/NAME.csv or site/leaderboard.html")],
    format: Annotated[
        Format, typer.Option("--format", help="csv, or html: a sortable page, measured and reported rows apart")
    ] = Format.csv,
    allow_protocol_mismatch: Annotated[
        bool,
        typer.Option(
            "--allow-protocol-mismatch", help="merge measured rows of one bench scored under different protocols (each row stays labelled)"
        ),
    ] = False,
) -> None:
    """Merge run results into one leaderboard CSV or HTML page (smoke rows marked, every row labelled
    with its protocol; measured rows of one bench under different protocols are refused, exit 2)."""
    from picbench.leaderboard import build_leaderboard, check_protocols, load_rows, metric_columns, write_leaderboard

    try:
        table = build_leaderboard(load_rows(results))
        for message in check_protocols(table, allow_mismatch=allow_protocol_mismatch):
            warn(message)
        if format is Format.html:
            from picbench.report import build_leaderboard_page, write_page

            write_page(build_leaderboard_page(table), out)
        else:
            write_leaderboard(table, out)
    except PicbenchError as exc:
        fail(exc)
    smoke = int(table["smoke"].sum())
    console.print(
        f"wrote {out}: {len(table)} row(s), {len(metric_columns(table))} metric column(s)"
        + (f", [bold red]{smoke} smoke row(s)[/]" if smoke else "")
    )
    console.print(*leaderboard_tables(table))


@leaderboard_app.command("show")
def show(csv: Annotated[Path, typer.Argument(help="a leaderboard CSV")]) -> None:
    """Print a leaderboard CSV as a table."""
    from picbench.leaderboard import read_leaderboard

    try:
        table = read_leaderboard(csv)
    except PicbenchError as exc:
        fail(exc)
    console.print(f"{csv}: {len(table)} row(s)")
    console.print(*leaderboard_tables(table))


def leaderboard_tables(table: pd.DataFrame) -> list[Table]:
    """One table per bench, a row per metric and a column per method (reported and smoke columns
    marked, intervals under the values): it stays readable in a terminal however many metric
    columns the CSV has."""
    from rich.markup import escape

    from picbench.leaderboard import coverage_label, higher_is_better, metric_columns

    views = []
    for bench, rows in table.groupby("bench", sort=True):
        metrics = [c for c in metric_columns(rows) if rows[c].notna().any()]
        view = Table(title=f"bench {escape(str(bench))}", title_justify="left")
        view.add_column("metric")
        for _, row in rows.iterrows():
            label = (
                escape(str(row["method"]))
                + (" (reported)" if row["source"] == "reported" else "")
                + (" [bold red]SMOKE[/]" if row["smoke"] else "")
                + (" [bold red]PARTIAL[/]" if "PARTIAL" in coverage_label(row) else "")
            )
            view.add_column(label, justify="right")
        records = rows.to_dict("records")
        for metric in metrics:
            cells = []
            for row in records:
                value, low, high = row.get(metric), row.get(metric + "_ci_low"), row.get(metric + "_ci_high")
                cells.append(
                    ""
                    if _missing(value)
                    else f"{value:.3f}" + ("" if _missing(low) or _missing(high) else f" [dim][{low:.3f}, {high:.3f}][/]")
                )
            view.add_row(escape(metric) + ("" if higher_is_better(metric, *records) else " (lower better)"), *cells)
        view.add_row("[dim]coverage (scored/expected)[/]", *(escape(coverage_label(row)) for row in records))
        views.append(view)
    return views


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
