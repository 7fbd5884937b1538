"""``picbench weights download METHOD... [--metrics] [--data]``: the weights a run (or a BMPDS
build) needs, fetched into one folder as ``DIR/<hub id>/`` for offline runs (``--weights-dir DIR``,
``PICBENCH_WEIGHTS_DIR=DIR``), sizes listed first.
Exit 2 when the hub cannot be reached or a repository is gated (files fetched so far are kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from picbench.cli.app import app, console
from picbench.cli.errors import fail
from picbench.cli.run import parse_assignments
from picbench.errors import PicbenchError

weights_app = typer.Typer(help="Fetch model weights for offline runs.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("download")
def download(
    methods: Annotated[list[str] | None, typer.Argument(help="methods whose checkpoints to fetch (picbench ls methods)")] = None,
    metrics: Annotated[bool, typer.Option("--metrics", help="also the metric models (CLIP, DINO, the detector)")] = False,
    data: Annotated[
        bool, typer.Option("--data", help="also the models of `picbench data build bmpds` (segmenter, outpainter, renderer, caption LM)")
    ] = False,
    detector: Annotated[str, typer.Option(help="the detector --metrics fetches, or 'none'")] = "grounding-dino",
    weights_dir: Annotated[Path | None, typer.Option(help="where to put them (default $PICBENCH_WEIGHTS_DIR)")] = None,
    param: Annotated[
        list[str], typer.Option("--param", "-p", help="method parameter KEY=VALUE choosing checkpoints (e.g. variant=text-box)")
    ] = [],  # noqa: B006
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the files and sizes, fetch nothing")] = False,
) -> None:
    """List the files each method (and --metrics, the metric engine) loads, with sizes, then fetch those not yet there."""
    from picbench.checkpoints import weights_root
    from picbench.downloads import fetch, metric_downloads, plan
    from picbench.paths import WEIGHTS_ENV

    folder = weights_root(weights_dir)
    if folder is None:
        fail(f"give --weights-dir DIR (or set {WEIGHTS_ENV}): the folder the weights go to, and that runs read")
    if not methods and not metrics and not data:
        fail("name at least one method (picbench ls methods), or --metrics for the metric models, or --data for BMPDS's")
    try:
        sources = [s for name in methods or () for s in _method_downloads(name, parse_assignments(param, "--param"))]
        if metrics:
            sources.extend(metric_downloads(None if detector.lower() == "none" else detector))
        if data:
            from picbench.reference_impl.bmpds.roles import downloads as data_downloads

            sources.extend(data_downloads())
        files = plan(sources, folder)
    except PicbenchError as exc:
        fail(exc)
    table = Table(title=f"weights into {escape(str(folder))}")
    for column, justify in (("repository", "left"), ("file", "left"), ("size", "right"), ("", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for f in files:
        table.add_row(escape(f.source.repo), escape(f.path), human_size(f.size), "present" if f.present else "to fetch")
    console.print(table)
    missing = [f for f in files if not f.present]
    total = sum(f.size or 0 for f in missing)
    console.print(f"{len(missing)} of {len(files)} file(s) to fetch, {human_size(total)}")
    if dry_run or not missing:
        return
    try:
        fetched = fetch(files, folder, lambda f: console.print(f"[green]ok[/] {escape(f.source.repo)}/{escape(f.path)}"))
    except PicbenchError as exc:
        fail(exc)
    console.print(
        f"fetched {fetched} file(s) into {escape(str(folder))}: run with --weights-dir {escape(str(folder))} "
        f"(or {WEIGHTS_ENV}={escape(str(folder))})"
    )


def _method_downloads(name: str, params: dict) -> tuple:
    """The method's downloads with ``params``; a method without networks is refused by name."""
    from picbench.methods import METHODS, Method

    cls = METHODS.get(name)
    if cls.downloads is Method.downloads:
        raise PicbenchError(f"method {name} loads no weights: nothing to download")
    try:
        return cls(params=params).downloads()
    except ValueError as exc:  # an unknown or out-of-range parameter
        raise PicbenchError(str(exc)) from exc


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
