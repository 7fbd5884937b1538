"""``picbench report``: a self-contained HTML page for one run, or several runs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from picbench.cli.app import app, console
from picbench.cli.errors import fail
from picbench.errors import PicbenchError

DEFAULT_MAX_IMAGES = 48  # picbench.report.DEFAULT_MAX_IMAGES (a test keeps them equal; importing it would import the page builder)


@app.command("report")
def report(
    results: Annotated[
        list[Path], typer.Argument(help="a run folder (or its results.json); two or more: one page comparing them side by side")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML file to write")] = Path("report.html"),
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="data root for the bench (target boxes, references)")] = None,  # noqa: UP007
    bench: Annotated[
        str | None, typer.Option("--bench", help="bench name or JSONL to read target boxes from (default: the run's bench)")
    ] = None,  # noqa: UP007
    max_images: Annotated[
        int, typer.Option("--max-images", min=0, help="how many generations (rows when comparing) the page shows")
    ] = DEFAULT_MAX_IMAGES,
) -> None:
    """Write one HTML page: aggregate table, per-subject plots, images beside their references with
    target and detected boxes; with several runs, a row per sample and a column per method; for a
    `picbench train` output folder, its training curves and validation scores."""
    from picbench.report import build_comparison, build_training_report, is_training_folder, write_page, write_report

    try:
        if len(results) == 1 and is_training_folder(results[0]):
            path = write_page(build_training_report(results[0]), out)
        elif len(results) == 1:
            path = write_report(results[0], out, data_dir=data_dir, bench=bench, max_images=max_images)
        else:
            path = write_page(build_comparison(results, data_dir=data_dir, bench=bench, max_samples=max_images), out)
    except PicbenchError as exc:
        fail(exc)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB), open it in a browser: file://{path.resolve()}")
