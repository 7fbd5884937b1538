"""``picbench leaderboard export|show``: merge run results into a leaderboard CSV, or print one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from picbench.cli.app import app, console, err_console
from picbench.errors import PicbenchError
from picbench.leaderboard import KEY_COLUMNS, export_leaderboard, metric_columns, read_leaderboard

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
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    smoke = int(table["smoke"].sum())
    console.print(f"wrote {out}: {len(table)} row(s), {len(metric_columns(table))} metric column(s)"
                  + (f", [bold red]{smoke} smoke row(s)[/]" if smoke else ""))
    console.print(leaderboard_table(table))


@leaderboard_app.command("show")
def show(csv: Annotated[Path, typer.Argument(help="a leaderboard CSV")]) -> None:
    """Print a leaderboard CSV as a table."""
    try:
        table = read_leaderboard(csv)
    except PicbenchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(leaderboard_table(table, title=str(csv)))


def leaderboard_table(table: pd.DataFrame, title: str | None = None) -> Table:
    """A rich table of the key and metric columns that hold at least one value."""
    metrics = [c for c in metric_columns(table) if table[c].notna().any()]
    view = Table(title=title)
    for column in KEY_COLUMNS + metrics:
        view.add_column(column, justify="right" if column in metrics else "left", overflow="fold")
    for _, row in table.iterrows():
        cells = [str(row[c]) for c in KEY_COLUMNS[:3]] + ["[bold red]SMOKE[/]" if row["smoke"] else "no"]
        cells += ["" if _missing(row[m]) else f"{row[m]:.3f}" for m in metrics]
        view.add_row(*cells)
    return view


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
