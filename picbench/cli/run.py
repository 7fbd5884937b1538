"""``picbench run`` and ``picbench merge``: the main job, with progress bars, a clean Ctrl-C and a
summary; smoke runs (``--models tiny``) are labelled loudly at the start and the end.

Exit codes (the table of :mod:`picbench.cli.errors`): 0 done; 1 a partial run (it scored fewer
items than it was asked for; its results are written, labelled partial) without ``--allow-partial``;
2 unusable input (unknown method or
bench, a bench failing validation, an unwritable output folder, an incompatible store, missing
weights, a device this machine lacks, another run holding the folder's lock, and any other problem
of the environment: memory, disk); 130 interrupted by Ctrl-C, 143 by SIGTERM (finished work is kept).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from picbench.cli.app import app, console, err_console
from picbench.cli.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, fail
from picbench.cli.output import emit_json, human_output_to_stderr
from picbench.coverage import PARTIAL_BANNER
from picbench.errors import PicbenchError
from picbench.interrupts import Terminated, sigterm_as_interrupt
from picbench.limits import SEED_LIMIT
from picbench.protocols import label
from picbench.results import RunResult

if TYPE_CHECKING:
    from picbench.runner import RunConfig

SMOKE_BANNER = "SMOKE RUN: --models tiny uses random-weight models; its images and numbers mean nothing"


def parse_seeds(text: str) -> tuple[int, ...]:
    """Distinct integers in [0, 2**63) (torch's generators and the store's SQLite integers)."""
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise PicbenchError(f"--seeds must be comma-separated integers (e.g. 0,1,2), got {text[:100]!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise PicbenchError(f"--seeds needs distinct integers, got {text[:100]!r}")
    out_of_range = [s for s in seeds if not 0 <= s < SEED_LIMIT]
    if out_of_range:
        raise PicbenchError(f"--seeds: seed {str(out_of_range[0])[:40]} is outside [0, 2**63)")
    return seeds


def parse_metrics(text: str | None, detector: str | None) -> tuple[str, ...] | None:
    """``--metrics``: None (every default metric) or the names, ``default`` expanded."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise PicbenchError(f"--metrics needs at least one metric name, got {text!r}")
    if "default" in names:
        from picbench.metrics.selection import select_metrics

        defaults = [m.name for m in select_metrics(None, detector)]
        names = [d for n in names for d in (defaults if n == "default" else [n])]
    return tuple(dict.fromkeys(names))


def parse_assignments(values: list[str], option: str) -> dict[str, Any]:
    """KEY=VALUE pairs; a VALUE that parses as JSON (numbers, true/false, lists) is taken as such."""
    parsed: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PicbenchError(f"{option} expects KEY=VALUE, got {item!r}")
        try:
            parsed[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key.strip()] = raw
    return parsed


class RichProgress:
    """The runner's progress reports drawn as rich bars, one per phase."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def phase(self, name: str, total: int, done: int) -> None:
        label = {"generate": "generating", "score": "scoring"}.get(name, name)
        self.tasks[name] = self.progress.add_task(label, total=total, completed=done)

    def advance(self, name: str, n: int = 1) -> None:
        self.progress.advance(self.tasks[name], n)

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]failure:[/] {message}")


@app.command("run")
def run_command(
    ctx: typer.Context,
    method: Annotated[
        str | None, typer.Option("--method", "-m", help="method name (picbench ls methods); required, here or in --config")
    ] = None,
    bench: Annotated[
        str | None, typer.Option("--bench", "-b", help="bench name or bench .jsonl path; required, here or in --config")
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="a run file (TOML) with these options as keys, e.g. a run folder's run.toml (every run writes one): "
            "rerun it as is; options given here win (docs/cli.md)",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/METHOD__BENCH); rerunning resumes")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="N samples: an even, seeded share of each split (same N, same samples)")] = None,  # noqa: UP007
    split: Annotated[str | None, typer.Option("--split", help="only the single- or only the multi-subject samples")] = None,  # noqa: UP007
    samples: Annotated[str | None, typer.Option("--samples", help="only these sample ids: ID,ID,... or @FILE (one id per line)")] = None,  # noqa: UP007
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps ...")] = "cpu",
    models: Annotated[str, typer.Option(help="default, or tiny: random-weight models, a smoke run")] = "default",
    shard: Annotated[
        str | None, typer.Option(help="i/n: this process takes part i (0-based) of n; merge with `picbench merge OUT`")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data root (default $PICBENCH_DATA_DIR or $PICBENCH_HOME/data)")] = None,
    detector: Annotated[
        str,
        typer.Option(
            help="box detector of the metric engine (picbench ls detectors, plug-ins included), 'none' for no box metrics, "
            "or 'default': the bench's own (vision-r1 on positionic and positionic-open, grounding-dino elsewhere; picbench ls protocols)"
        ),
    ] = "default",
    protocols: Annotated[
        str,
        typer.Option(
            "--protocols",
            help="identity protocols to score, from the same features: default (every eval image of a subject), references "
            "(only the references the method was given), or both: default,references (the first gives the plain metric keys, "
            "the others KEY@NAME)",
        ),
    ] = "default",
    precision: Annotated[
        str,
        typer.Option(
            help="the CLIP/DINO encoders' arithmetic: fp32 (the references' protocols) or bf16 (autocast; recorded in the protocol)"
        ),
    ] = "fp32",
    metrics: Annotated[
        str | None,
        typer.Option(
            help="comma-separated metrics (picbench ls metrics); 'default' stands for every default metric, e.g. default,vlm_judge"
        ),
    ] = None,  # noqa: UP007
    param: Annotated[list[str], typer.Option("--param", "-p", help="method parameter KEY=VALUE (repeatable)")] = [],  # noqa: B006
    weights: Annotated[
        list[str], typer.Option("--weights", help="local weights folder of a metric model ROLE=DIR (clip, dino, detector)")
    ] = [],  # noqa: B006
    weights_dir: Annotated[
        Path | None,
        typer.Option(
            help="the weights folder: method checkpoints and metric models as DIR/<hub id> (default $PICBENCH_WEIGHTS_DIR; docs/weights.md)"
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="samples per generate call and metric batch")] = 4,
    retry_failed: Annotated[bool, typer.Option(help="generate again the samples whose generation failed before")] = False,
    allow_partial: Annotated[
        bool, typer.Option("--allow-partial", help="exit 0 even when some items were not scored (the results say partial)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print results.json on stdout; the human output goes to stderr")] = False,
) -> None:
    """Generate, score and write results; finished work is stored in OUT/store.sqlite and never redone.
    Ends with "scored k of n"; exit 1 when k < n unless --allow-partial. The run's options are
    written to OUT/run.toml: `picbench run --config OUT/run.toml` reruns it as is."""
    options = {
        "method": method, "bench": bench, "out": out, "limit": limit, "split": split, "samples": samples, "seeds": seeds,
        "device": device, "models": models, "shard": shard, "data_dir": data_dir, "detector": detector, "protocols": protocols,
        "precision": precision, "metrics": metrics, "param": param, "weights": weights, "weights_dir": weights_dir,
        "batch_size": batch_size, "retry_failed": retry_failed, "allow_partial": allow_partial,
    }  # fmt: skip
    if config_file is not None:
        from picbench.run_file import read_run_file

        try:
            from_file = read_run_file(config_file)
        except PicbenchError as exc:
            fail(exc)
        for name, value in from_file.items():
            source = ctx.get_parameter_source(name)  # click's ParameterSource (typer ships its own click: compare by name)
            if source is None or source.name != "COMMANDLINE":  # the command line wins
                options[name] = Path(value) if name in ("out", "data_dir", "weights_dir") else value
    allow_partial = options.pop("allow_partial")
    config = _run_config(**options)
    with human_output_to_stderr(as_json):
        result = _execute(config, allow_partial=allow_partial)
    if result is None:  # a shard: the results come with the merge
        if as_json:
            emit_json({"out": str(config.out), "shard": str(config.shard), "results": None, "merge": f"picbench merge {config.out}"})
        return
    if as_json:
        emit_json(result.to_dict())
    if result.partial and not allow_partial:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _run_config(
    *,
    method: str | None,
    bench: str | None,
    out: Path | None,
    limit: int | None,
    split: str | None,
    samples: str | None,
    seeds: str,
    device: str,
    models: str,
    shard: str | None,
    data_dir: Path | None,
    detector: str,
    protocols: str,
    precision: str,
    metrics: str | None,
    param: list[str],
    weights: list[str],
    weights_dir: Path | None,
    batch_size: int,
    retry_failed: bool,
) -> RunConfig:
    """The run the options describe (from the command line or a run file), every value checked."""
    from picbench.protocols import check_precision, parse_identity_sets
    from picbench.runner import RunConfig, Shard, default_out
    from picbench.selection import parse_sample_ids

    if method is None or bench is None:
        fail(f"{'--method' if method is None else '--bench'} is required (on the command line or in the --config file)")
    if models not in ("default", "tiny"):
        fail(f"--models must be 'default' or 'tiny', got {models!r}")
    for name, value in (("--limit", limit), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            fail(f"{name} must be at least 1, got {value}")
    try:
        return RunConfig(
            method=method,
            bench=bench,
            out=out or default_out(method, bench),
            seeds=parse_seeds(seeds),
            limit=limit,
            split=split,
            samples=parse_sample_ids(samples) if samples is not None else None,
            device=device,
            models=models,  # type: ignore[arg-type]
            shard=Shard.parse(shard) if shard else None,  # type: ignore[arg-type]
            data_dir=data_dir,
            detector=None if detector.lower() == "none" else detector,
            params=parse_assignments(param, "--param"),
            weights=parse_assignments(weights, "--weights"),
            weights_dir=weights_dir,
            batch_size=batch_size,
            retry_failed=retry_failed,
            metrics=parse_metrics(metrics, None if detector.lower() == "none" else detector),
            precision=check_precision(precision),
            identity_sets=parse_identity_sets(protocols),
        )
    except PicbenchError as exc:
        fail(exc)


def _execute(config: RunConfig, *, allow_partial: bool) -> RunResult | None:
    """The run with its bars and summary; its result, or None for a shard that awaits its merge."""
    from picbench.runner import run

    if config.smoke:
        console.print(Panel(SMOKE_BANNER, style="bold white on red", expand=False))
    bars = Progress(
        TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=console
    )
    try:
        with sigterm_as_interrupt(), bars:
            outcome = run(config, RichProgress(bars))
    except KeyboardInterrupt as exc:
        _stopped(exc, config.out)
    except (PicbenchError, ValueError) as exc:  # ValueError: a method's parameter check
        fail(exc)
    console.print(
        f"part {outcome.part}: {outcome.items} item(s); generated {outcome.generated} ({outcome.generation_reused} reused), "
        f"{outcome.generation_failures} generation failure(s); scored {outcome.scored} ({outcome.score_reused} reused)"
    )
    if outcome.result is None:
        console.print(f"shard {outcome.part} done; when every shard is done: [bold]picbench merge {config.out}[/]")
        return None
    print_summary(outcome.result, config.out, allow_partial=allow_partial)
    return outcome.result


@app.command("merge")
def merge_command(
    out: Annotated[Path, typer.Argument(help="the run folder the shards wrote")],
    device: Annotated[str | None, typer.Option(help="device for the metric engine (default: the run's)")] = None,
    allow_partial: Annotated[
        bool, typer.Option("--allow-partial", help="exit 0 even when some items were not scored (the results say partial)")
    ] = False,
) -> None:
    """Write results.json and samples.jsonl of a sharded run from its store."""
    from picbench.runner import merge

    try:
        with sigterm_as_interrupt():
            result = merge(out, device=device)
    except KeyboardInterrupt as exc:
        _stopped(exc, out)
    except PicbenchError as exc:
        fail(exc)
    print_summary(result, out, allow_partial=allow_partial)
    if result.partial and not allow_partial:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _stopped(exc: KeyboardInterrupt, out: Path) -> NoReturn:
    """Ctrl-C (exit 130) or SIGTERM (exit 143): say that finished work is kept, and how to resume."""
    terminated = isinstance(exc, Terminated)
    err_console.print(
        f"[bold yellow]{'terminated (SIGTERM)' if terminated else 'interrupted'}:[/] every finished generation and score "
        f"is saved in {escape(str(out))}/store.sqlite; run the same command again to resume"
    )
    raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None


def print_summary(result: RunResult, out: Path, *, allow_partial: bool = False) -> None:
    """The aggregate table, where the files are, and last the coverage line ("scored k of n"),
    with a banner when the run is partial or a smoke run."""
    table = Table(
        title=f"{result.method} on {result.bench}" + (" [SMOKE]" if result.smoke else "") + (" [PARTIAL]" if result.partial else "")
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("better")
    for key in sorted(result.metrics):
        value, interval = result.metrics[key], result.intervals.get(key)
        table.add_row(
            key,
            "n/a" if value is None else f"{value:.4f}",
            f"{interval[0]:.4f} .. {interval[1]:.4f}" if interval else "",
            "higher" if result.better_high(key) else "[bold]lower[/]",
        )
    for key in sorted(result.counts):
        table.add_row(f"[dim]{key}[/]", str(result.counts[key]), "", "")
    console.print(table)
    console.print(
        f"protocol: {escape(label(result.protocol))}"
        + "".join(f"; KEY@{p['fields'].get('identity')}: {escape(label(p))}" for p in result.extra_protocols)
    )
    console.print(f"results: {out / 'results.json'}, per sample: {out / 'samples.jsonl'}")
    if result.smoke:
        console.print(Panel(SMOKE_BANNER, style="bold white on red", expand=False))
    print_coverage(result, allow_partial=allow_partial)


def print_coverage(result: RunResult, *, allow_partial: bool) -> None:
    """``scored k of n`` (per split too), and for a partial run its banner and what the exit code says."""
    coverage = result.coverage
    if coverage is None:  # a result always records it; the type allows results read from older files
        console.print("[bold red]coverage unknown[/]")
        return
    console.print(f"[bold]{coverage.summary(' item(s)')}[/]", highlight=False)
    if coverage.partial:
        verdict = "allowed by --allow-partial" if allow_partial else "exit 1 (pass --allow-partial to accept a partial run)"
        console.print(Panel(f"{PARTIAL_BANNER}: {coverage.text()}; {verdict}", style="bold white on red", expand=False))
