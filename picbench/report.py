"""``picbench report``: one self-contained HTML page for a run, readable offline and attachable to a
CI job: the aggregate table, per-subject plots, and the generated images with every subject's
target box (solid) and detected box (dashed) drawn in that subject's colour.

Everything is inlined (images as base64, boxes as SVG over each image); the page fetches nothing.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

from picbench.atomic import atomic_write
from picbench.benches import load_bench
from picbench.errors import ImageError, PicbenchError, UnsafePathError
from picbench.imaging import load_rgb
from picbench.leaderboard import BASE_METRICS, SMOKE_NOTE, provenance_summary
from picbench.paths import resolve_contained
from picbench.records import Bench, Sample, Score, SubjectScore
from picbench.results import RESULTS_FILE, SAMPLES_FILE, RunResult, iter_sample_scores, load_result

SUBJECT_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
DEFAULT_MAX_IMAGES = 48
THUMBNAIL_PX = 320
LABEL_CHARS = 40
MAX_PLOT_SUBJECTS = 200


@dataclass
class RunView:
    """What the page is built from: the result, its per-sample scores and images, and the bench
    samples that hold the target boxes (None where the bench could not be loaded)."""

    result: RunResult
    run_dir: Path
    scores: list[tuple[Score, str | None]]
    samples: Mapping[str, Sample] | None
    warnings: list[str] = field(default_factory=list)

    @property
    def smoke(self) -> bool:
        return self.result.smoke or any(score.smoke for score, _ in self.scores)


def load_run_view(results: str | Path, *, data_dir: str | Path | None = None, bench: str | None = None) -> RunView:
    """Read a run folder (or its results.json). The bench is loaded for target boxes: by the name
    the result records, or ``bench`` (a name or a bench JSONL) to override; a bench that cannot be
    loaded, or whose hash differs from the run's, becomes a warning on the page, not an error."""
    path = Path(results)
    run_dir = path if path.is_dir() else path.parent
    for name in (RESULTS_FILE, SAMPLES_FILE):
        if (run_dir / name).is_symlink():
            resolve_contained(run_dir, name)  # a run folder's own files, not a door out of it
    result = load_result(path)
    view = RunView(result, run_dir, [], None)
    if (run_dir / SAMPLES_FILE).is_file():
        view.scores = list(iter_sample_scores(run_dir))
    else:
        view.warnings.append(f"no {SAMPLES_FILE} beside {RESULTS_FILE}: only the aggregate table can be shown")
    if bench is None and _names_a_file(result.bench):
        view.warnings.append(
            f"the run names bench {result.bench[:200]!r}, which is not a registered or built bench, so it is not read "
            "(a results file must not make the report open arbitrary files); pass --bench to draw target boxes"
        )
        return view
    try:
        loaded: Bench = load_bench(bench or result.bench, data_dir)
    except (PicbenchError, OSError) as exc:
        view.warnings.append(f"bench {bench or result.bench!r} could not be loaded, so target boxes are not drawn: {exc}")
        return view
    view.samples = {s.id: s for s in loaded.samples}
    if result.bench_hash and loaded.content_hash() != result.bench_hash:
        view.warnings.append(f"bench {loaded.name!r} has changed since this run (its hash differs from the run's): target boxes may not match")
    return view


def _names_a_file(name: str) -> bool:
    """True for a bench name that ``load_bench`` would read as a path rather than look up."""
    from picbench.benches import BENCHES, built_benches

    return (name.endswith(".jsonl") or "/" in name or "\\" in name) and name not in BENCHES.names() and name not in built_benches()


def build_report(
    results: str | Path,
    *,
    data_dir: str | Path | None = None,
    bench: str | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> str:
    """The HTML page for the run at ``results`` (a run folder or its results.json)."""
    view = load_run_view(results, data_dir=data_dir, bench=bench)
    r = view.result
    title = f"picbench report: {r.method} on {r.bench}" + (" (SMOKE RUN)" if view.smoke else "")
    parts = [f"<h1>{_e(title)}</h1>"]
    if view.smoke:
        parts.append(f'<div class="smoke" role="alert">{_e(SMOKE_NOTE)}. Do not quote or compare them.</div>')
    parts += [f'<div class="warning">warning: {_e(w)}</div>' for w in view.warnings]
    parts += [
        "<h2>Aggregate metrics</h2>",
        aggregate_table(r.metrics).to_html(classes="metrics", na_rep="—", float_format=lambda v: f"{v:.4f}", border=0),
        "<h2>Run</h2>",
        _key_value_table(run_facts(r)),
        "<details><summary>full provenance</summary><pre>",
        _e(json.dumps(dict(r.provenance), indent=2, sort_keys=True, default=str)),
        "</pre></details>",
    ]
    per_subject = per_subject_table([score for score, _ in view.scores])
    if not per_subject.empty:
        parts += [
            "<h2>Per subject</h2>",
            f'<img class="plot" alt="per-subject metrics" src="data:image/png;base64,{per_subject_plot_png(per_subject)}">',
            "<details><summary>per-subject table</summary>",
            per_subject.to_html(classes="per-subject", na_rep="—", float_format=lambda v: f"{v:.4f}", border=0),
            "</details>",
        ]
    if view.scores:
        shown = view.scores[:max_images]
        parts += [
            "<h2>Generated images</h2>",
            f'<p class="legend">showing {len(shown)} of {len(view.scores)} generation(s). '
            '<svg width="34" height="10"><line x1="0" y1="5" x2="34" y2="5" stroke="#333" stroke-width="3"/></svg> target box (from the bench) '
            '<svg width="34" height="10"><line x1="0" y1="5" x2="34" y2="5" stroke="#333" stroke-width="3" stroke-dasharray="6 4"/></svg> '
            "detected box (the detection matched to the subject); one colour per subject.</p>",
            '<div class="grid">',
            *(image_card(view, score, image) for score, image in shown),
            "</div>",
        ]
        failed = [(score.sample_id, score.seed, "; ".join(score.failures)) for score, _ in view.scores if score.failures]
        if failed:
            parts += ["<h2>Failures</h2>", pd.DataFrame(failed, columns=["sample", "seed", "reason"]).to_html(classes="failures", index=False, border=0)]
    return _page(title, "\n".join(parts))


def write_report(results: str | Path, out: str | Path, **options: Any) -> Path:
    """Build the page and write it atomically to ``out``."""
    page = build_report(results, **options)
    out = Path(out)
    with atomic_write(out) as fh:
        fh.write(page)
    return out


def aggregate_table(metrics: Mapping[str, float | None]) -> pd.DataFrame:
    """Rows are metrics, columns the splits (all / single / multi); keys outside that grid get rows of their own."""
    table: dict[str, dict[str, float | None]] = {}
    for key, value in metrics.items():
        base, _, split = key.partition(".")
        if split not in ("", "single", "multi"):
            base, split = key, ""
        table.setdefault(base, {})[split or "all"] = value
    order = [m for m in BASE_METRICS if m in table] + sorted(m for m in table if m not in BASE_METRICS)
    frame = pd.DataFrame.from_dict(table, orient="index").reindex(index=order, columns=["all", "single", "multi"])
    return frame.dropna(axis=1, how="all")


def run_facts(r: RunResult) -> dict[str, str]:
    """What a reader needs to trust or reproduce the numbers; the full provenance follows the table."""
    facts = {
        "method": f"{r.method} {r.method_version}".strip(),
        "method parameters": ", ".join(f"{k}={v}" for k, v in r.method_params.items()),
        "bench": f"{r.bench} {r.bench_version}".strip(),
        "bench hash": r.bench_hash,
        "seeds": ", ".join(map(str, r.seeds)),
        "counts": ", ".join(f"{k} {v}" for k, v in r.counts.items()),
        "source": r.source,
        "smoke": "yes: random-weight models" if r.smoke else "no",
        **{k.replace("_", " "): v for k, v in provenance_summary(r).items()},
    }
    return {k: v for k, v in facts.items() if v}


def per_subject_table(scores: Sequence[Score]) -> pd.DataFrame:
    """Mean of each per-subject metric by subject name, with how many generations it covers."""
    rows = [
        {"subject": sub.name, "metric": key, "value": value}
        for score in scores
        for sub in score.subjects
        for key, value in sub.metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ]
    if not rows:
        return pd.DataFrame()
    long = pd.DataFrame(rows)
    table = long.pivot_table(index="subject", columns="metric", values="value", aggfunc="mean")
    order = [m for m in BASE_METRICS if m in table.columns] + sorted(c for c in table.columns if c not in BASE_METRICS)
    counts = pd.Series({name: sum(1 for s in scores for sub in s.subjects if sub.name == name) for name in table.index}, name="n")
    return table[order].join(counts)


def per_subject_plot_png(table: pd.DataFrame) -> str:
    """One bar panel per metric, a bar per subject (the first MAX_PLOT_SUBJECTS; the table lists
    all); base64 PNG."""
    table = table.iloc[:MAX_PLOT_SUBJECTS]
    metrics = [c for c in table.columns if c != "n"]
    height = max(2.5, 0.28 * len(table) + 1.2)
    labels = [plain_label(name) for name in table.index]
    label_in = 0.09 * max(len(label) for label in labels) + 0.3  # fixed margins: constrained layout costs seconds
    width = label_in + 2.6 * len(metrics)
    fig = Figure(figsize=(width, height), dpi=96)
    fig.subplots_adjust(left=label_in / width, right=1 - 0.25 / width, top=1 - 0.35 / height, bottom=0.45 / height, wspace=0.12)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        values = table[metric]
        ax.barh(range(len(table)), values.fillna(0.0), color="#4c72b0")
        ax.set_title(plain_label(metric))
        ax.set_xlim(min(0.0, float(values.min())), max(1.0, float(values.max())))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(table)), labels)
    axes[0].invert_yaxis()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plain_label(text: object, limit: int = LABEL_CHARS) -> str:
    """A plot label shown as written: one line, at most ``limit`` characters (an ellipsis marks
    the cut), and ``$`` escaped so matplotlib does not parse mathtext."""
    one_line = " ".join(str(text).split())
    if len(one_line) > limit:
        one_line = one_line[: limit - 1] + "…"
    return one_line.replace("$", r"\$")


def image_card(view: RunView, score: Score, image: str | None) -> str:
    """One generated image with its boxes as an SVG overlay, and a caption that is the legend."""
    sample = view.samples.get(score.sample_id) if view.samples is not None else None
    head = f"<b>{_e(score.sample_id)}</b> seed {score.seed}" + (f"<br><i>{_e(sample.prompt)}</i>" if sample else "")
    try:
        if image is None:
            raise ImageError("no image (generation failed)")
        picture = load_rgb(resolve_contained(view.run_dir, image))
    except (ImageError, UnsafePathError) as exc:
        reason = "; ".join(score.failures) or str(exc)
        return f'<figure class="card failed"><div class="missing">{_e(reason)}</div><figcaption>{head}</figcaption></figure>'
    width, height = picture.size
    picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    boxes, legend = [], []
    stroke, dash = max(width, height) / 110, max(width, height) / 40
    for index, (name, target, detected, iou) in enumerate(_subject_boxes(sample, score)):
        colour = SUBJECT_COLOURS[index % len(SUBJECT_COLOURS)]
        if target is not None:
            x0, y0, x1, y1 = target[0] * width, target[1] * height, target[2] * width, target[3] * height
            boxes.append(_rect(x0, y0, x1, y1, colour, stroke, None, f"{name}: target"))
        if detected is not None:
            boxes.append(_rect(*detected, colour, stroke, dash, f"{name}: detected"))
        found = "" if detected is not None else " (not detected)"
        iou_text = f" IoU {iou:.2f}" if iou is not None else ""
        legend.append(f'<span class="subject"><span class="swatch" style="background:{colour}"></span>{_e(name)}{iou_text}{found}</span>')
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure class="card"><div class="frame"><img alt="{_e(score.sample_id)}" src="data:image/jpeg;base64,{data}">'
        f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none">{"".join(boxes)}</svg></div>'
        f"<figcaption>{head}<div>{''.join(legend)}</div></figcaption></figure>"
    )


def _subject_boxes(sample: Sample | None, score: Score) -> list[tuple[str, Sequence[float] | None, Sequence[float] | None, float | None]]:
    """(name, normalized target box, detected pixel box, IoU) per subject, bench order first; a
    score's subject is matched to the bench's by name."""
    by_name: dict[str, SubjectScore] = {s.name: s for s in score.subjects}
    rows = []
    if sample is not None:
        for sub in sample.subjects:
            scored = by_name.pop(sub.name, None)
            rows.append((sub.name, sub.box, scored.detected_box if scored else None, scored.iou if scored else None))
    rows += [(s.name, None, s.detected_box, s.iou) for s in by_name.values()]
    return rows


def _rect(x0: float, y0: float, x1: float, y1: float, colour: str, stroke: float, dash: float | None, label: str) -> str:
    dashed = f' stroke-dasharray="{dash:.1f} {dash * 0.6:.1f}"' if dash else ""
    return (
        f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0, 0):.1f}" height="{max(y1 - y0, 0):.1f}" fill="none" '
        f'stroke="{colour}" stroke-width="{stroke:.1f}"{dashed}><title>{_e(label)}</title></rect>'
    )


def _key_value_table(facts: Mapping[str, str]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts.items())
    return f'<table class="facts">{rows}</table>'


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1400px}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9rem}th,td{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right}
table.facts th,table.facts td{text-align:left}table.facts td{font-family:monospace;word-break:break-all}
.smoke{background:#c62828;color:#fff;font-weight:bold;padding:.8rem 1rem;font-size:1.1rem;margin:1rem 0}
.warning{background:#fff3cd;border:1px solid #e0c36a;padding:.5rem .8rem;margin:.4rem 0}
.plot{max-width:100%}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1rem}
.card{margin:0;border:1px solid #ddd;padding:.4rem;background:#fafafa}
.frame{position:relative;line-height:0}.frame img{width:100%;height:auto;display:block}
.frame svg{position:absolute;left:0;top:0;width:100%;height:100%}
figcaption{font-size:.8rem;margin-top:.3rem}.subject{margin-right:.7rem;white-space:nowrap}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.25rem;vertical-align:middle}
pre{white-space:pre-wrap;font-size:.75rem}
.missing{background:#eee;color:#a00;padding:2rem .5rem;text-align:center}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
