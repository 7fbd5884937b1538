"""``picbench compare RUN_A RUN_B``: is A better than B, or is the difference noise? A paired
bootstrap over the (sample, seed) items both runs scored (:mod:`picbench.metrics.bootstrap`).

Exit codes: 0 compared; 1 the comparison fails closed on coverage: either run scored fewer items,
or has more failed items, than the other, or its coverage is unknown (``--allow-partial`` compares
anyway, labelled); 2 unusable input (runs of different protocols without
``--allow-protocol-mismatch`` included)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from picbench.cli.app import app, console, err_console
from picbench.cli.errors import EXIT_CHECK_FAILED, fail, warn
from picbench.cli.output import append_step_summary, emit_json, human_output_to_stderr, markdown_table
from picbench.coverage import ALLOW_HINT, ALLOWED, gate
from picbench.errors import PicbenchError
from picbench.protocols import ProtocolMismatchError, differing_fields, label, mismatch_message, spread

if TYPE_CHECKING:
    from picbench.metrics.bootstrap import PairedDifference
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
    allow_partial: Annotated[
        bool, typer.Option("--allow-partial", help="compare even when one run covers fewer items or has more failures (labelled)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the differences as JSON on stdout")] = False,
) -> None:
    """Per metric: A minus B over the items both runs share, its 95% interval and a p-value; runs of
    different protocols are refused (exit 2) unless --allow-protocol-mismatch; the spread between the
    protocols a run computed (--protocols default,references) follows. Runs that do not cover the
    same items fail closed (exit 1) unless --allow-partial. With GITHUB_STEP_SUMMARY set, the table
    is appended to it as Markdown."""
    with human_output_to_stderr(as_json):
        results, found, blocking = _compare(run_a, run_b, metrics, resamples, seed, allow_protocol_mismatch, allow_partial)
    append_step_summary(markdown_summary(results, found, blocking, allow_partial))
    if as_json:
        emit_json(
            {
                "verdict": "fail" if blocking and not allow_partial else "compared",
                "a": {"run": str(run_a), "method": results[0].method, "coverage": _coverage_record(results[0])},
                "b": {"run": str(run_b), "method": results[1].method, "coverage": _coverage_record(results[1])},
                "bench": results[0].bench,
                "coverage_problems": blocking,
                "resamples": resamples,
                "seed": seed,
                "differences": [{**asdict(d), "better_high": results[0].better_high(d.metric)} for d in found],
            }
        )
    if blocking and not allow_partial:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _compare(
    run_a: Path, run_b: Path, metrics: str | None, resamples: int, seed: int, allow_protocol_mismatch: bool, allow_partial: bool
) -> tuple[list[RunResult], list[PairedDifference], list[str]]:
    """Load both runs, check their protocols and coverage, bootstrap, print the tables: (results,
    differences, coverage problems)."""
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
    blocking = coverage_problems(results[0], results[1])
    for reason in blocking:
        if allow_partial:
            warn(reason + ALLOWED)
        else:
            err_console.print(f"[bold red]not comparable:[/] {escape(reason + ALLOW_HINT)}")
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
        + (" [PARTIAL]" if any(r.partial for r in results) else "")
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
    return results, found, blocking


def coverage_problems(a: RunResult, b: RunResult) -> list[str]:
    """Why the two runs' items do not cover the same ground: each is held to the other as its
    baseline (a paired comparison is only as good as the side that lost items)."""
    reasons = [gate("A vs B", a.coverage, b.coverage), gate("B vs A", b.coverage, a.coverage)]
    return list(dict.fromkeys(r for r in reasons if r))


def _coverage_record(result: RunResult) -> dict | None:
    return result.coverage.to_dict() if result.coverage is not None else None


def markdown_summary(results: list[RunResult], found: list[PairedDifference], blocking: list[str], allow_partial: bool) -> str:
    """The comparison as Markdown (GitHub's job summary)."""
    a, b = results
    verdict = "FAIL (coverage)" if blocking and not allow_partial else "compared" + (" (partial, allowed)" if blocking else "")
    lines = [f"### picbench compare: {a.method} (A) vs {b.method} (B) on {a.bench}: {verdict}", ""]
    lines += [f"- not comparable: {reason}" for reason in blocking]
    rows = [
        (
            d.metric,
            "higher" if a.better_high(d.metric) else "lower",
            f"{d.a:.4f}",
            f"{d.b:.4f}",
            f"{d.difference:+.4f}",
            f"{d.ci_low:+.4f} .. {d.ci_high:+.4f}",
            f"{d.p_value:.3f}",
            d.n_items,
        )
        for d in found
    ]
    return "\n".join(lines) + "\n\n" + markdown_table(("metric", "better", "A", "B", "A - B", "95% CI", "p", "items"), rows)


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
