"""``picbench bench build NAME`` and ``picbench bench export BENCH --format jsonl|hf``."""

from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape

from picbench.cli.app import app, console
from picbench.cli.errors import fail, warn
from picbench.errors import PicbenchError

bench_app = typer.Typer(help="Build and export benches.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    hf = "hf"


@bench_app.command("build")
def build(
    name: str = typer.Argument(..., help="a buildable bench, e.g. positionic-open"),
    seed: int = typer.Option(0, "--seed", help="the seed every random choice is drawn from"),
    out: Path | None = typer.Option(None, "--out", help="output .jsonl (default: the built-bench folder)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="data root (default: $PICBENCH_DATA_DIR or $PICBENCH_HOME/data)"),
) -> None:
    """Reconstruct a bench deterministically (same seed, same bytes)."""
    from picbench.benches import BUILDABLE, built_bench_dir
    from picbench.paths import find_data_dir

    target = out if out is not None else built_bench_dir() / f"{name}.jsonl"
    try:
        bench = BUILDABLE.get(name)(find_data_dir(data_dir), target, seed)
    except PicbenchError as exc:
        fail(exc)
    splits = {s: sum(x.split == s for x in bench.samples) for s in ("single", "multi")}
    console.print(
        f"built {bench.name} v{bench.version} (seed {seed}): {splits['single']} single + {splits['multi']} multi samples -> {escape(str(target))}"
    )
    if bench.reconstruction:
        console.print("[yellow]note:[/yellow] this is a reconstruction, not the official benchmark")


@bench_app.command("export")
def export(
    bench: str = typer.Argument(..., help="a bench name (registered or built) or a .jsonl path"),
    fmt: ExportFormat = typer.Option(..., "--format", help="jsonl (picbench bench file) or hf (datasets folder with images)"),
    out: Path = typer.Option(..., "--out", help="output file (jsonl) or folder (hf)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="data root (default: $PICBENCH_DATA_DIR or $PICBENCH_HOME/data)"),
) -> None:
    """Write a bench as a JSONL bench file or as a Hugging Face dataset folder."""
    from picbench.benches import load_bench
    from picbench.benches.jsonl import write_bench_jsonl

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = load_bench(bench, data_dir)
            if fmt is ExportFormat.jsonl:
                write_bench_jsonl(loaded, out)
            else:
                from picbench.benches.hf import save_bench_hf

                save_bench_hf(loaded, out)
        except PicbenchError as exc:
            fail(exc)
    for w in caught:
        warn(w.message)
    console.print(f"exported {loaded.name} v{loaded.version} ({len(loaded)} samples) as {fmt.value} -> {escape(str(out))}")
