"""``picbench leaderboard export|show``: merge run results into a leaderboard CSV, or print one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from picbench.cli.app import app, console
from picbench.cli.errors import fail
from picbench.errors import PicbenchError
from picbench.leaderboard import export_leaderboard, metric_columns, read_leaderboard

leaderboard_app = typer.Typer(help="Leaderboard CSVs: a row per method and bench, a column per metric.", no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")


@leaderboard_app.command("export")
def export(
    results: Annotated[list[Path], typer.Argument(help="results.json files, run folders, or leaderboard CSVs to merge")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the CSV to write, e.g. leaderboards/NAME.csv")],
) -> None:
    """Merge run results into one leaderboard CSV (smoke rows marked)."""
    try:
        table = export_leaderboard(results, out)
    except PicbenchError as exc:
        fail(exc)
    smoke = int(table["smoke"].sum())
    console.print(f"wrote {out}: {len(table)} row(s), {len(metric_columns(table))} metric column(s)"
                  + (f", [bold red]{smoke} smoke row(s)[/]" if smoke else ""))
    console.print(*leaderboard_tables(table))


@leaderboard_app.command("show")
def show(csv: Annotated[Path, typer.Argument(help="a leaderboard CSV")]) -> None:
    """Print a leaderboard CSV as a table."""
    try:
        table = read_leaderboard(csv)
    except PicbenchError as exc:
        fail(exc)
    console.print(f"{csv}: {len(table)} row(s)")
    console.print(*leaderboard_tables(table))


def leaderboard_tables(table: pd.DataFrame) -> list[Table]:
    """One table per bench, a row per metric and a column per method (reported and smoke columns
    marked): it stays readable in a terminal however many metric columns the CSV has."""
    views = []
    for bench, rows in table.groupby("bench", sort=True):
        metrics = [c for c in metric_columns(rows) if rows[c].notna().any()]
        view = Table(title=f"bench {bench}", title_justify="left")
        view.add_column("metric")
        for _, row in rows.iterrows():
            label = str(row["method"]) + (" (reported)" if row["source"] == "reported" else "") + (" [bold red]SMOKE[/]" if row["smoke"] else "")
            view.add_column(label, justify="right")
        for metric in metrics:
            view.add_row(metric, *("" if _missing(v) else f"{v:.3f}" for v in rows[metric]))
        views.append(view)
    return views


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
