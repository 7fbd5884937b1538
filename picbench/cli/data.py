"""``picbench data``: fetch the evaluation data (``fetch [dreambench|msbench|all]``), build training pair sets (``build paste-pairs``, ``build bmpds CONFIG``), and
look at them (``stats PAIRS``, ``report PAIRS``)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import TaskID
from rich.table import Table

from picbench.cli.app import app, console
from picbench.cli.errors import fail, warn
from picbench.errors import PicbenchError

data_app = typer.Typer(help="Fetch the evaluation data; build and inspect training pair sets.", no_args_is_help=True)
build_app = typer.Typer(help="Build a training pair set.", no_args_is_help=True)
data_app.add_typer(build_app, name="build")
app.add_typer(data_app, name="data")

DEFAULT_PASTE_OUT = Path("pairs/paste-pairs")
DATA_DIR_HELP = "data root (default: $PICBENCH_DATA_DIR or $PICBENCH_HOME/data)"


class DataSet(str, Enum):
    dreambench = "dreambench"
    msbench = "msbench"
    all = "all"


@data_app.command("fetch")
def fetch(
    name: DataSet = typer.Argument(DataSet.all, help="which data: dreambench (DreamBooth + UNO's lists), msbench, or all"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="where to put it (default: $PICBENCH_DATA_DIR or $PICBENCH_HOME/data)"),
    mirror: str | None = typer.Option(
        None,
        "--mirror",
        help="base URL serving GitHub's codeload paths OWNER/REPO/tar.gz/COMMIT (default: $PICBENCH_DATA_MIRROR or GitHub)",
    ),
    from_dir: Path | None = typer.Option(
        None, "--from", help="a folder with local copies instead of downloads: REPO-COMMIT.tar.gz|.zip, REPO-COMMIT/ or a REPO/ checkout"
    ),
    verify: bool = typer.Option(False, "--verify", help="also hash files already present (default: their size is checked)"),
) -> None:
    """Download the evaluation data from its upstream repositories at pinned commits, verify every
    file against the manifest shipped with picbench, and lay it out as the benches read it.
    Resumable; a second run with everything present does nothing. See docs/data.md."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from picbench.data.fetch import Reporter
    from picbench.data.fetch import fetch as fetch_data
    from picbench.data.sources import sources_for
    from picbench.paths import DATA_DIR_ENV, default_data_dir

    root = data_dir or (Path(os.environ[DATA_DIR_ENV]) if os.environ.get(DATA_DIR_ENV) else default_data_dir())
    sources = sources_for(name.value)
    bars = Progress(TextColumn("{task.description:>26}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console)
    tasks: dict[str, TaskID] = {}

    def on_bytes(source, done: int, total: int | None) -> None:
        if source.name not in tasks:
            tasks[source.name] = bars.add_task(source.label, total=total)
        bars.update(tasks[source.name], completed=done, total=total)

    try:
        with bars:
            outcomes = fetch_data(
                sources, root, mirror=mirror, from_dir=from_dir, verify=verify, reporter=Reporter(say=bars.console.print, on_bytes=on_bytes)
            )
    except PicbenchError as exc:
        fail(exc)
    for outcome in outcomes:
        s = outcome.source
        did = (
            "all files present, nothing to do"
            if outcome.action == "present"
            else f"{outcome.action}, {outcome.placed} files verified and placed"
        )
        console.print(f"{escape(s.label)}: {did}")
        console.print(f"  licence: {escape(s.licence)}; kept as {', '.join(escape(str(root / f)) for f in s.licence_files)}")
        for rel in outcome.unverifiable:
            warn(f"{rel} is not in {outcome.origin}: loaders report it as missing (the manifest knows it by its upstream git blob id)")
    console.print(f"data root: {escape(str(root))}")


@build_app.command("paste-pairs")
def paste_pairs(
    seed: int = typer.Option(0, "--seed", help="the seed every random choice is drawn from"),
    n: int = typer.Option(24, "--n", help="multi-subject pairs (2 or 3 subjects)"),
    singles: int = typer.Option(8, "--singles", help="single-subject pairs"),
    out: Path = typer.Option(DEFAULT_PASTE_OUT, "--out", help="the pair set folder (pairs.jsonl, targets/, references)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
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
    console.print(
        f"built {pairs.name} v{pairs.version} (seed {seed}): {counts['single']} single + {counts['multi']} multi pairs -> {escape(str(out / 'pairs.jsonl'))}"
    )


@build_app.command("bmpds")
def bmpds(
    config_file: Path = typer.Argument(..., help="the build config (TOML; see reference_impl/bmpds/config.py)"),
    out: Path = typer.Option(Path("pairs/bmpds"), "--out", help="the build folder: the pair set, its store and candidates.jsonl"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
) -> None:
    """Run (or resume) BMPDS: single, forward and backward stages, then the three-level filter.
    Under torchrun / accelerate launch every rank takes its share of each stage into one store."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from picbench.environment import require_extra
    from picbench.paths import find_data_dir

    try:
        require_extra("picbench data build bmpds")
        from picbench.reference_impl.bmpds import build, load_config, plan

        config = load_config(config_file)
        root = find_data_dir(data_dir)
    except PicbenchError as exc:
        fail(exc)
    if config.models == "tiny":
        console.print('[bold red]SMOKE BUILD:[/] models = "tiny" uses random-weight models; its pairs mean nothing')
    totals = {stage: len(units) for stage, units in plan(config).items()}
    bars = Progress(
        TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=console
    )
    tasks = {stage: bars.add_task(stage, total=n) for stage, n in totals.items()}
    from picbench.cli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED
    from picbench.interrupts import Terminated, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt(), bars:
            outcome = build(config, out, root, on_unit=lambda stage, done, total: bars.update(tasks[stage], completed=done, total=total))
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        console.print(
            f"[bold yellow]{'terminated (SIGTERM)' if terminated else 'interrupted'}:[/] every finished unit and score is saved in "
            f"{escape(str(out))}/store.sqlite; run the same command again to resume"
        )
        raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
    except (PicbenchError, ValueError) as exc:  # ValueError: the subject method's parameter check
        fail(exc)
    ran = ", ".join(f"{stage} {outcome.ran[stage]} ({outcome.reused[stage]} reused)" for stage in totals)
    console.print(f"part {outcome.part}: ran {ran}")
    if outcome.pairs is not None and outcome.verdicts is not None:
        status = {k: sum(v.status == k for v in outcome.verdicts.values()) for k in ("kept", "dropped", "failed")}
        console.print(
            f"kept {status['kept']} of {len(outcome.verdicts)} candidates ({status['dropped']} dropped by the filter, "
            f"{status['failed']} failed) -> {escape(str(out / 'pairs.jsonl'))}"
        )


@data_app.command("stats")
def stats(
    pairs: Path = typer.Argument(..., help="a pair set folder (or its pairs.jsonl)"),
    as_json: bool = typer.Option(False, "--json", help="print the stats as JSON"),
) -> None:
    """Counts per stage and filter level, and histograms of the filter's scores."""
    from picbench.pairs.stats import pair_stats

    try:
        result = pair_stats(pairs)
    except PicbenchError as exc:
        fail(exc)
    if as_json:
        import json

        console.print_json(json.dumps(result.to_dict()))
        return
    console.print(f"{result.name}: {result.n_pairs} pairs ({', '.join(f'{k} {v}' for k, v in sorted(result.splits.items()))})")
    table = Table("stage", "kept", "dropped", "failed")
    for stage, counts in sorted(result.stages.items()):
        table.add_row(stage, *(str(counts.get(k, 0)) for k in ("kept", "dropped", "failed")))
    console.print(table)
    if result.levels:
        console.print("dropped or failed at: " + ", ".join(f"{k} {v}" for k, v in sorted(result.levels.items())))
    for reason, n in sorted(result.reasons.items(), key=lambda kv: -kv[1]):
        console.print(f"  failed {n}x: {escape(reason)}")
    for name, h in result.histograms.items():
        peak = max(h["counts"]) or 1
        console.print(f"{name} (n={h['n']}):")
        for lo, hi, c in zip(h["edges"], h["edges"][1:], h["counts"]):
            console.print(f"  {lo:8.3f} .. {hi:8.3f} {'#' * round(30 * c / peak):<30} {c}")


@data_app.command("report")
def report(
    pairs: Path = typer.Argument(..., help="a pair set folder (or its pairs.jsonl)"),
    out: Path = typer.Option(Path("pairs.html"), "--out", help="the HTML page to write"),
    max_pairs: int = typer.Option(96, "--max-pairs", help="pairs shown as cards (the counts cover all)"),
) -> None:
    """One self-contained HTML page: references, targets with boxes, scores and verdicts."""
    from picbench.pairs.report import write_pairs_report

    try:
        path = write_pairs_report(pairs, out, max_pairs=max_pairs)
    except PicbenchError as exc:
        fail(exc)
    console.print(f"wrote {escape(str(path))} ({path.stat().st_size // 1024} KiB), open it in a browser: {path.resolve().as_uri()}")
