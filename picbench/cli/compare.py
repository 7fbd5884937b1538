"""``picbench compare RUN_A RUN_B``: is A better than B, or is the difference noise? A paired
bootstrap over the (sample, seed) items both runs scored (:mod:`picbench.metrics.bootstrap`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from picbench.cli.app import app, console
from picbench.cli.errors import fail, warn
from picbench.errors import PicbenchError
from picbench.protocols import ProtocolMismatchError, differing_fields, label, mismatch_message, spread

if TYPE_CHECKING:
    from picbench.results import RunResult


@app.command("compare")
def compare(
    run_a: Annotated[Path, typer.Argument(help="run folder A")],
    run_b: Annotated[Path, typer.Argument(help="run folder B")],
    metrics: Annotated[
        str | None, typer.Option(help="comma-separated metric keys (default: every per-item metric both runs hold, with its splits)")
    ] = None,  # noqa: UP007
    resamples: Annotated[int, typer.Option(min=100, help="bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option(help="seed of the resampling (the same seed gives the same intervals)")] = 0,
    allow_protocol_mismatch: Annotated[
        bool,
        typer.Option("--allow-protocol-mismatch", help="compare runs scored under different (or unknown) protocols, labelled"),
    ] = False,
) -> None:
    """Per metric: A minus B over the items both runs share, its 95% interval and a p-value; runs of
    different protocols are refused (exit 2) unless --allow-protocol-mismatch; the spread between the
    protocols a run computed (--protocols default,references) follows."""
    from picbench.metrics.bootstrap import paired_bootstrap
    from picbench.results import bench_and_direction_mismatches, iter_sample_scores, load_result

    try:
        results = [load_result(run) for run in (run_a, run_b)]
        mismatch = protocol_mismatch(results[0], results[1], str(run_a), str(run_b))
        if mismatch and not allow_protocol_mismatch:
            raise ProtocolMismatchError(mismatch)
        scores = [[score for score, _ in iter_sample_scores(run if run.is_dir() else run.parent)] for run in (run_a, run_b)]
    except (PicbenchError, OSError) as exc:
        fail(exc)
    if mismatch:
        warn(mismatch.split("; numbers of different")[0] + "; compared anyway (--allow-protocol-mismatch)")
    keys = [k.strip() for k in metrics.split(",") if k.strip()] if metrics else _shared_keys(scores[0], scores[1])
    mismatches = bench_and_direction_mismatches(results[0], results[1], keys)
    if mismatches:
        fail(f"{run_a} and {run_b} cannot be compared item by item: " + "; ".join(mismatches))
    found = paired_bootstrap(scores[0], scores[1], keys, resamples=resamples, seed=seed)
    if not found:
        fail(f"nothing to compare: {run_a} and {run_b} share no (sample, seed) item with a value of {', '.join(keys) or 'any metric'}")
    label_a, label_b = (f"{r.method}" for r in results)
    table = Table(
        title=f"{escape(label_a)} (A) vs {escape(label_b)} (B) on {escape(results[0].bench)}"
        + (" [SMOKE]" if any(r.smoke for r in results) else "")
    )
    for column in ("metric", "better", "A", "B", "A - B", "95% CI", "p", "items"):
        table.add_column(column, justify="left" if column in ("metric", "better") else "right")
    for d in found:
        high = results[0].better_high(d.metric)
        style = "green" if d.p_value < 0.05 and (d.difference > 0) == high else "red" if d.p_value < 0.05 else ""
        table.add_row(
            escape(d.metric),
            "higher" if high else "lower",
            f"{d.a:.4f}",
            f"{d.b:.4f}",
            f"[{style}]{d.difference:+.4f}[/]" if style else f"{d.difference:+.4f}",
            f"{d.ci_low:+.4f} .. {d.ci_high:+.4f}",
            f"{d.p_value:.3f}",
            str(d.n_items),
        )
    console.print(table)
    console.print(f"protocols: A {escape(label(results[0].protocol))}; B {escape(label(results[1].protocol))}")
    for name, result in zip("AB", results):
        rows = spread(result.metrics, result.protocol, result.extra_protocols)
        if rows:
            console.print(spread_table(rows, f"run {name} ({escape(result.method)}): spread between the protocols it computed"))
    console.print(
        f"paired bootstrap: {resamples} resamples of the samples (seeds nested), seed {seed}; "
        "p: two-sided, for 'A and B do not differ'; green/red: A significantly better/worse at 0.05"
    )


def _shared_keys(a: list, b: list) -> list[str]:
    """Per-item metric keys (not counts) both runs hold a value of, each followed by its splits."""

    def keys(scores: list) -> set[str]:
        return {k for sc in scores for k, v in sc.metrics.items() if v is not None and not k.startswith("n_")}

    shared = sorted(keys(a) & keys(b))
    splits = sorted({"single" if len(sc.subjects) == 1 else "multi" for sc in a if sc.subjects})
    return [f"{k}{s}" for k in shared for s in ["", *(f".{sp}" for sp in splits if len(splits) > 1)]]


def protocol_mismatch(a: RunResult, b: RunResult, name_a: str, name_b: str) -> str | None:
    """Why two runs' numbers are not comparable as they stand (different or unknown protocols), or None."""
    fields = differing_fields(a.protocol, b.protocol)
    return mismatch_message(f"run A ({name_a})", a.protocol, f"run B ({name_b})", b.protocol, fields) if fields else None


def spread_table(rows: list[tuple[str, dict[str, float | None], float | None]], title: str) -> Table:
    """metric | value under each identity protocol | max - min."""
    sets = list(rows[0][1])
    view = Table(title=title)
    for column in ("metric", *sets, "spread"):
        view.add_column(column, justify="left" if column == "metric" else "right")
    for key, values, gap in rows:
        view.add_row(
            escape(key), *("n/a" if values.get(s) is None else f"{values[s]:.4f}" for s in sets), "n/a" if gap is None else f"{gap:.4f}"
        )
    return view
