"""``picbench data``: build training pair sets (``build paste-pairs``, ``build bmpds CONFIG``), and
look at them (``stats PAIRS``, ``report PAIRS``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from picbench.cli.app import app, console
from picbench.cli.errors import fail
from picbench.errors import PicbenchError

data_app = typer.Typer(help="Build and inspect training pair sets.", no_args_is_help=True)
build_app = typer.Typer(help="Build a training pair set.", no_args_is_help=True)
data_app.add_typer(build_app, name="build")
app.add_typer(data_app, name="data")

DEFAULT_PASTE_OUT = Path("pairs/paste-pairs")


@build_app.command("paste-pairs")
def paste_pairs(
    seed: int = typer.Option(0, "--seed", help="the seed every random choice is drawn from"),
    n: int = typer.Option(24, "--n", help="multi-subject pairs (2 or 3 subjects)"),
    singles: int = typer.Option(8, "--singles", help="single-subject pairs"),
    out: Path = typer.Option(DEFAULT_PASTE_OUT, "--out", help="the pair set folder (pairs.jsonl, targets/, references)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="data root (default: $PICBENCH_DATA_DIR or ../shared/data)"),
) -> None:
    """DreamBench subjects pasted at seeded boxes onto MS-Bench scenes (no generative model)."""
    from picbench.pairs import split_counts
    from picbench.pairs.paste import build_paste_pairs
    from picbench.paths import find_data_dir

    try:
        pairs = build_paste_pairs(find_data_dir(data_dir), out, seed=seed, n_multi=n, n_single=singles)
    except PicbenchError as exc:
        fail(exc)
    counts = split_counts(pairs.samples)
    console.print(f"built {pairs.name} v{pairs.version} (seed {seed}): {counts['single']} single + {counts['multi']} multi pairs -> {escape(str(out / 'pairs.jsonl'))}")
