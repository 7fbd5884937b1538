"""``picbench report``: a self-contained HTML page for one run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from picbench.cli.app import app, console
from picbench.cli.errors import fail
from picbench.errors import PicbenchError
from picbench.report import DEFAULT_MAX_IMAGES, write_report


@app.command("report")
def report(
    results: Annotated[Path, typer.Argument(help="a run folder (or its results.json)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML file to write")] = Path("report.html"),
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="data root for the bench (target boxes)")] = None,  # noqa: UP007
    bench: Annotated[Optional[str], typer.Option("--bench", help="bench name or JSONL to read target boxes from (default: the run's bench)")] = None,  # noqa: UP007
    max_images: Annotated[int, typer.Option("--max-images", min=0, help="how many generated images the grid shows")] = DEFAULT_MAX_IMAGES,
) -> None:
    """Write one HTML page: aggregate table, per-subject plots, images with target and detected boxes."""
    try:
        path = write_report(results, out, data_dir=data_dir, bench=bench, max_images=max_images)
    except PicbenchError as exc:
        fail(exc)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB), open it in a browser: file://{path.resolve()}")
