"""``picbench report``: self-contained HTML pages, readable offline and attachable to a CI job.

- one run: the aggregate table (with bootstrap intervals), per-subject plots, and the generated
  images beside their subjects' references, every subject's target box (solid) and detected box
  (dashed) drawn in that subject's colour;
- several runs side by side (what every paper in this field shows in its first figure): a row per
  sample, the references first, then a column per method, boxes drawn, each cell's scores under it;
- a leaderboard (``picbench leaderboard export --format html``): measured and reported rows apart,
  intervals shown, columns sortable by a click (the only page with a script: a dozen lines, inline).

Everything is inlined (images as base64, boxes as SVG over each image); a page fetches nothing.
pandas and matplotlib are imported by the functions that use them, not by ``picbench --help``.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from picbench.atomic import atomic_write
from picbench.benches import load_bench
from picbench.coverage import PARTIAL_BANNER, Coverage
from picbench.errors import ImageError, PicbenchError, UnsafePathError
from picbench.html import REFERENCE_PX, SUBJECT_COLOURS, THUMBNAIL_PX, escape, html_page, key_value_table, svg_rect
from picbench.imaging import load_rgb
from picbench.leaderboard import SMOKE_NOTE, protocol_label, provenance_summary
from picbench.metrics import headline_keys, output_keys
from picbench.paths import resolve_contained
from picbench.protocols import label as protocol_name
from picbench.protocols import spread
from picbench.records import Bench, Sample, Score, SubjectScore
from picbench.results import RESULTS_FILE, SAMPLES_FILE, RunResult, iter_sample_scores, load_result
from picbench.trainlog import TRAIN_LOG, finite
from picbench.trainlog import read_training_log as read_log

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MAX_IMAGES = 48
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
    data_root: Path | None = None  # where the bench's reference images are
    thumbnails: dict[str, str] = field(default_factory=dict)  # reference path -> base64 JPEG: each decoded once per page

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
    recorded = recorded_bench_file(result) if bench is None else None
    if recorded is not None:
        bench, data_dir, refused = _recorded_bench(recorded, data_dir)
        if refused:
            view.warnings.append(refused)
            return view
    elif bench is None and _names_a_file(result.bench):
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
    view.data_root = loaded.data_root
    if result.bench_hash and loaded.content_hash() != result.bench_hash:
        view.warnings.append(
            f"bench {loaded.name!r} has changed since this run (its hash differs from the run's): target boxes may not match"
        )
    return view


def recorded_bench_file(result: RunResult) -> Mapping[str, Any] | None:
    """The bench file a run recorded reading (path, sha256, data root), if it recorded one."""
    bench = result.provenance.get("bench")
    record = bench.get("file") if isinstance(bench, Mapping) else None
    if isinstance(record, Mapping) and isinstance(record.get("path"), str) and isinstance(record.get("sha256"), str):
        return record
    return None


def _recorded_bench(record: Mapping[str, Any], data_dir: str | Path | None) -> tuple[str | None, str | Path | None, str | None]:
    """(bench path, data root, None) to read the run's own bench file again, or (None, None, why
    not). The file is read only when its bytes still hash to what the run recorded: a results file
    cannot make the report parse any other file, and a bench edited since the run is not taken for it."""
    from picbench.records import file_sha256

    path = Path(record["path"])
    if not path.name.endswith(".jsonl") or not path.is_file():  # never a device, a pipe or a folder
        return None, None, f"the run's bench file {path} is not a .jsonl file here: pass --bench to draw target boxes"
    try:
        found = file_sha256(path)
    except OSError as exc:
        return None, None, f"the run's bench file {path} cannot be read ({exc.strerror or exc}): pass --bench to draw target boxes"
    if found != record["sha256"]:
        return None, None, f"the run's bench file {path} has changed since the run (its sha256 differs): pass --bench to draw target boxes"
    root = data_dir or (record.get("data_root") if isinstance(record.get("data_root"), str) and record.get("data_root") else None)
    return str(path), root, None


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
    import pandas as pd

    view = load_run_view(results, data_dir=data_dir, bench=bench)
    r = view.result
    title = f"picbench report: {r.method} on {r.bench}" + (" (SMOKE RUN)" if view.smoke else "")
    parts = [f"<h1>{escape(title)}</h1>"]
    if view.smoke:
        parts.append(f'<div class="smoke" role="alert">{escape(SMOKE_NOTE)}. Do not quote or compare them.</div>')
    parts += coverage_banners([(None, r)])
    parts += [f'<div class="warning">warning: {escape(w)}</div>' for w in view.warnings]
    parts.append(protocol_header(r))
    parts += [
        "<h2>Aggregate metrics</h2>",
        aggregate_table(r.metrics, r.intervals).to_html(
            classes="metrics", na_rep="—", float_format=lambda v: f"{v:.4f}", border=0, escape=False
        ),
        "<h2>Run</h2>",
        key_value_table(run_facts(r)),
        "<details><summary>full provenance</summary><pre>",
        escape(json.dumps(dict(r.provenance), indent=2, sort_keys=True, default=str)),
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
            parts += [
                "<h2>Failures</h2>",
                pd.DataFrame(failed, columns=["sample", "seed", "reason"]).to_html(classes="failures", index=False, border=0),
            ]
    return html_page(title, "\n".join(parts))


def write_report(results: str | Path, out: str | Path, **options: Any) -> Path:
    """Build the page and write it atomically to ``out``."""
    return write_page(build_report(results, **options), out)


def aggregate_table(metrics: Mapping[str, float | None], intervals: Mapping[str, Sequence[float]] | None = None) -> pd.DataFrame:
    """Rows are metrics, columns the splits (all / single / multi); keys outside that grid get rows
    of their own. With intervals, each cell reads ``value [low, high]`` (HTML-escaped text)."""
    import pandas as pd

    table: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        base, _, split = key.partition(".")
        if split not in ("", "single", "multi"):
            base, split = key, ""
        interval = (intervals or {}).get(key)
        if intervals is not None and value is not None:
            value = f"{value:.4f}" + (f' <span class="ci">[{interval[0]:.4f}, {interval[1]:.4f}]</span>' if interval else "")
        table.setdefault(escape(base) if intervals is not None else base, {})[split or "all"] = value
    known = output_keys()
    order = [m for m in known if m in table] + sorted(m for m in table if m not in known)
    frame = pd.DataFrame.from_dict(table, orient="index").reindex(index=order, columns=["all", "single", "multi"])
    return frame.dropna(axis=1, how="all")


def coverage_banners(results: Sequence[tuple[str | None, RunResult]]) -> list[str]:
    """A banner per partial run (its aggregates leave items out) and per run of unknown coverage."""
    banners = []
    for label, r in results:
        who = f"{label}: " if label else ""
        if r.coverage is None:
            banners.append(
                f'<div class="partial" role="alert">{escape(who)}coverage unknown: this results file predates coverage records</div>'
            )
        elif r.coverage.partial:
            banners.append(f'<div class="partial" role="alert">{escape(who + PARTIAL_BANNER)}: {escape(coverage_text(r.coverage))}</div>')
    return banners


def coverage_text(coverage: Coverage | None) -> str:
    """``scored k of n (f with failures)`` with the splits, or ``unknown``."""
    return "unknown" if coverage is None else coverage.summary()


def protocol_header(r: RunResult) -> str:
    """The protocol the numbers were computed under, at the top of the page (``unknown`` for results
    that record none), the other identity sets' labels, and the spread between protocols."""
    names = [protocol_name(r.protocol)] + [f"{protocol_name(p)} (keys KEY@{p['fields'].get('identity', '?')})" for p in r.extra_protocols]
    parts = [f'<p class="protocol"><b>protocol:</b> {" · ".join(escape(n) for n in names)}</p>']
    rows = spread(r.metrics, r.protocol, r.extra_protocols)
    if rows:
        sets = list(rows[0][1])
        head = "".join(f"<th>{escape(s)}</th>" for s in sets)
        body = "".join(
            f"<tr><th>{escape(key)}</th>"
            + "".join(f"<td>{'—' if values.get(s) is None else f'{values[s]:.4f}'}</td>" for s in sets)
            + f"<td>{'—' if gap is None else f'{gap:.4f}'}</td></tr>"
            for key, values, gap in rows
        )
        parts.append(
            "<h2>Spread between protocols</h2><p>The same images scored under each identity protocol; the spread is how much "
            f'the protocol choice alone moves each metric.</p><table class="metrics spread"><thead><tr><th>metric</th>{head}'
            f"<th>spread</th></tr></thead><tbody>{body}</tbody></table>"
        )
    if r.protocol:
        parts.append(
            "<details><summary>protocol fields</summary><pre>"
            + escape(json.dumps(dict(r.protocol.get("fields", {})), indent=2, sort_keys=True, default=str))
            + "</pre></details>"
        )
    return "\n".join(parts)


def run_facts(r: RunResult) -> dict[str, str]:
    """What a reader needs to trust or reproduce the numbers; the full provenance follows the table."""
    facts = {
        "method": f"{r.method} {r.method_version}".strip(),
        "method parameters": ", ".join(f"{k}={v}" for k, v in r.method_params.items()),
        "bench": f"{r.bench} {r.bench_version}".strip(),
        "bench hash": r.bench_hash,
        "seeds": ", ".join(map(str, r.seeds)),
        "coverage": coverage_text(r.coverage) + (" (PARTIAL)" if r.partial else ""),
        "counts": ", ".join(f"{k} {v}" for k, v in r.counts.items()),
        "source": r.source,
        "smoke": "yes: random-weight models" if r.smoke else "no",
        "protocol": protocol_name(r.protocol),
        **{k.replace("_", " "): v for k, v in provenance_summary(r).items()},
    }
    return {k: v for k, v in facts.items() if v}


def per_subject_table(scores: Sequence[Score]) -> pd.DataFrame:
    """Mean of each per-subject metric by subject name, with how many generations it covers."""
    import pandas as pd

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
    known = output_keys()
    order = [m for m in known if m in table.columns] + sorted(c for c in table.columns if c not in known)
    counts = pd.Series({name: sum(1 for s in scores for sub in s.subjects if sub.name == name) for name in table.index}, name="n")
    return table[order].join(counts)


def per_subject_plot_png(table: pd.DataFrame) -> str:
    """One bar panel per metric, a bar per subject (the first MAX_PLOT_SUBJECTS; the table lists
    all); base64 PNG."""
    from matplotlib.figure import Figure

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
    """One generated image with its boxes as an SVG overlay, its subjects' references beside it,
    and a caption that is the legend."""
    sample = view.samples.get(score.sample_id) if view.samples is not None else None
    head = f"<b>{escape(score.sample_id)}</b> seed {score.seed}" + (f"<br><i>{escape(sample.prompt)}</i>" if sample else "")
    try:
        frame, legend = framed_image(view.run_dir, image, sample, score)
    except (ImageError, UnsafePathError) as exc:
        reason = "; ".join(score.failures) or str(exc)
        return f'<figure class="card failed"><div class="missing">{escape(reason)}</div><figcaption>{head}</figcaption></figure>'
    refs = reference_strip(sample, view.data_root, view.thumbnails)
    return f'<figure class="card"><div class="pair">{refs}{frame}</div><figcaption>{head}<div>{legend}</div></figcaption></figure>'


def framed_image(run_dir: Path, image: str | None, sample: Sample | None, score: Score) -> tuple[str, str]:
    """(the image as a thumbnail with target and detected boxes drawn over it, its legend); raises
    ImageError (or UnsafePathError) when there is no readable image."""
    if image is None:
        raise ImageError("no image (generation failed)")
    picture = load_rgb(resolve_contained(run_dir, image))
    width, height = picture.size
    boxes, legend = [], []
    stroke, dash = max(width, height) / 110, max(width, height) / 40
    for index, (name, target, detected, iou) in enumerate(_subject_boxes(sample, score)):
        colour = SUBJECT_COLOURS[index % len(SUBJECT_COLOURS)]
        if target is not None:
            x0, y0, x1, y1 = target[0] * width, target[1] * height, target[2] * width, target[3] * height
            boxes.append(svg_rect(x0, y0, x1, y1, colour, stroke, None, f"{name}: target"))
        if detected is not None:
            boxes.append(svg_rect(*detected, colour, stroke, dash, f"{name}: detected"))
        found = "" if detected is not None else " (not detected)"
        iou_text = f" IoU {iou:.2f}" if iou is not None else ""
        legend.append(
            f'<span class="subject"><span class="swatch" style="background:{colour}"></span>{escape(name)}{iou_text}{found}</span>'
        )
    frame = (
        f'<div class="frame"><img alt="{escape(score.sample_id)}" src="data:image/jpeg;base64,{_jpeg(picture, THUMBNAIL_PX)}">'
        f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none">{"".join(boxes)}</svg></div>'
    )
    return frame, "".join(legend)


def reference_strip(sample: Sample | None, data_root: Path | None, cache: dict[str, str]) -> str:
    """Each subject's first reference as a small thumbnail framed in the subject's colour (nothing
    where the bench or the image is unavailable: the page says why elsewhere)."""
    if sample is None or data_root is None:
        return ""
    cells = []
    for index, sub in enumerate(sample.subjects):
        colour = SUBJECT_COLOURS[index % len(SUBJECT_COLOURS)]
        path = sub.references[0]
        if path not in cache:
            try:
                cache[path] = _jpeg(load_rgb(resolve_contained(data_root, path)), REFERENCE_PX)
            except (ImageError, UnsafePathError):
                cache[path] = ""
        if cache[path]:
            cells.append(
                f'<img class="ref" style="border-color:{colour}" alt="reference of {escape(sub.name)}" title="{escape(sub.name)}: {escape(path)}" '
                f'src="data:image/jpeg;base64,{cache[path]}">'
            )
        else:
            cells.append(f'<div class="ref missing" style="border-color:{colour}">{escape(sub.name)}: reference unreadable</div>')
    return f'<div class="refs">{"".join(cells)}</div>'


def _jpeg(picture: Image.Image, size: int) -> str:
    picture = picture.copy()
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


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


# -- several runs side by side --------------------------------------------------------------------


def build_comparison(
    results: Sequence[str | Path],
    *,
    data_dir: str | Path | None = None,
    bench: str | None = None,
    max_samples: int = DEFAULT_MAX_IMAGES,
) -> str:
    """One page comparing runs: their aggregates side by side (with intervals), then a row per
    (sample, seed): the subjects' references first, then a column per run, boxes drawn, each
    cell's scores under it. The first run's bench supplies prompts, boxes and references."""
    views = [load_run_view(r, data_dir=data_dir, bench=bench) for r in results]
    labels = _run_labels(views)
    smoke = any(v.smoke for v in views)
    title = "picbench comparison: " + " vs ".join(labels) + f" on {views[0].result.bench}" + (" (SMOKE RUN)" if smoke else "")
    parts = [f"<h1>{escape(title)}</h1>"]
    if smoke:
        parts.append(f'<div class="smoke" role="alert">{escape(SMOKE_NOTE)}. Do not quote or compare them.</div>')
    parts += coverage_banners([(label, v.result) for label, v in zip(labels, views)])
    if len({v.result.bench for v in views}) > 1:
        parts.append(
            f'<div class="warning">warning: the runs are on different benches ({escape(", ".join(sorted({v.result.bench for v in views})))}); '
            "rows are matched by sample id</div>"
        )
    parts += [f'<div class="warning">warning: {escape(label)}: {escape(w)}</div>' for label, v in zip(labels, views) for w in v.warnings]
    parts.append(_protocol_lines(views, labels))
    parts += ["<h2>Aggregate metrics</h2>", _side_by_side_aggregates(views, labels)]
    guide = next((v for v in views if v.samples is not None), views[0])
    by_run = [{(sc.sample_id, sc.seed): (sc, image) for sc, image in v.scores} for v in views]
    keys = list(dict.fromkeys(k for run in by_run for k in run))
    shown = keys[:max_samples]
    header = "".join(f"<th>{escape(label)}</th>" for label in labels)
    rows = []
    for sample_id, seed in shown:
        sample = guide.samples.get(sample_id) if guide.samples is not None else None
        head = f"<b>{escape(sample_id)}</b><br>seed {seed}" + (f"<br><i>{escape(sample.prompt)}</i>" if sample else "")
        cells = [f"<td>{head}</td>", f"<td>{reference_strip(sample, guide.data_root, guide.thumbnails)}</td>"]
        for view, run in zip(views, by_run):
            cells.append(f"<td>{_comparison_cell(view, sample, run.get((sample_id, seed)))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    parts += [
        "<h2>Side by side</h2>",
        f'<p class="legend">showing {len(shown)} of {len(keys)} (sample, seed) item(s); solid: target box, dashed: detected box, '
        "one colour per subject (the references' frames).</p>",
        f'<table class="compare"><thead><tr><th>sample</th><th>references</th>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>',
    ]
    return html_page(title, "\n".join(parts))


def write_page(page: str, out: str | Path) -> Path:
    """Write a built page atomically to ``out``."""
    out = Path(out)
    with atomic_write(out) as fh:
        fh.write(page)
    return out


def _run_labels(views: Sequence[RunView]) -> list[str]:
    """The method names, numbered where two runs share one."""
    names = [v.result.method for v in views]
    return [f"{n} #{names[: i + 1].count(n)}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _protocol_lines(views: Sequence[RunView], labels: Sequence[str]) -> str:
    """Each run's protocol, and a warning where they differ (their numbers are not comparable as they stand)."""
    names = [protocol_name(v.result.protocol) for v in views]
    lines = "".join(f"<li>{escape(label)}: {escape(name)}</li>" for label, name in zip(labels, names))
    differ = len(set(names)) > 1 or any(v.result.protocol is None for v in views)
    warning = (
        '<div class="warning">warning: the runs were not all scored under one known protocol; their numbers are labelled, '
        "not comparable as they stand</div>"
        if differ
        else ""
    )
    return f'{warning}<ul class="protocols"><b>protocols:</b> {lines}</ul>'


def _side_by_side_aggregates(views: Sequence[RunView], labels: Sequence[str]) -> str:
    keys = list(dict.fromkeys(k for v in views for k in v.result.metrics))
    known = output_keys()
    order = sorted(keys, key=lambda k: (known.index(k.split(".")[0]) if k.split(".")[0] in known else len(known), k))
    head = "".join(f"<th>{escape(label)}</th>" for label in labels)
    body = []
    for key in order:
        cells = []
        for view in views:
            value, interval = view.result.metrics.get(key), view.result.intervals.get(key)
            text = (
                "—"
                if value is None
                else f"{value:.4f}" + (f' <span class="ci">[{interval[0]:.4f}, {interval[1]:.4f}]</span>' if interval else "")
            )
            cells.append(f"<td>{text}</td>")
        arrow = "" if views[0].result.better_high(key) else " (lower is better)"
        body.append(f"<tr><th>{escape(key)}{arrow}</th>{''.join(cells)}</tr>")
    return f'<table class="metrics"><thead><tr><th>metric</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _comparison_cell(view: RunView, sample: Sample | None, found: tuple[Score, str | None] | None) -> str:
    if found is None:
        return '<div class="missing">not in this run</div>'
    score, image = found
    try:
        frame, legend = framed_image(view.run_dir, image, sample, score)
    except (ImageError, UnsafePathError) as exc:
        return f'<div class="missing">{escape("; ".join(score.failures) or str(exc))}</div>'
    values = " · ".join(f"{k} {score.metrics[k]:.3f}" for k in headline_keys() if isinstance(score.metrics.get(k), (int, float)))
    failures = f'<div class="fail">{escape("; ".join(score.failures))}</div>' if score.failures else ""
    return f'{frame}<div class="scores">{escape(values) or "no scores"}</div><div>{legend}</div>{failures}'


# -- a leaderboard as a sortable page ------------------------------------------------------------

_SORT_SCRIPT = """<script>
for (const table of document.querySelectorAll('table.leaderboard')) {
  table.querySelectorAll('thead th').forEach((th, col) => th.addEventListener('click', () => {
    const down = th.getAttribute('aria-sort') !== 'descending';
    table.querySelectorAll('thead th').forEach(h => h.removeAttribute('aria-sort'));
    th.setAttribute('aria-sort', down ? 'descending' : 'ascending');
    const key = r => r.children[col].dataset.value;
    const rows = [...table.tBodies[0].rows].sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === '' || y === '') return (x === '') - (y === '');
      const nx = Number(x), ny = Number(y);
      const c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return down ? -c : c;
    });
    rows.forEach(r => table.tBodies[0].appendChild(r));
  }));
}
</script>"""


def build_leaderboard_page(table: pd.DataFrame, title: str = "picbench leaderboard") -> str:
    """Measured and reported rows in separate tables (a paper's numbers are not measurements),
    a column per metric with its interval where known and its direction, sortable by a click."""
    from picbench.leaderboard import coverage_label, higher_is_better, metric_columns

    metrics = [m for m in metric_columns(table) if table[m].notna().any()]
    parts = [f"<h1>{escape(title)}</h1>"]
    if bool(table["smoke"].any()):
        parts.append(f'<div class="smoke" role="alert">rows marked SMOKE: {escape(SMOKE_NOTE)}</div>')
    partial = [r for r in table.to_dict("records") if "PARTIAL" in coverage_label(r)]
    if partial:
        names = ", ".join(f"{r['method']} on {r['bench']}" for r in partial)
        parts.append(f'<div class="partial" role="alert">rows marked PARTIAL ({escape(names)}): {escape(PARTIAL_BANNER)}</div>')
    parts.append(
        "<p>Click a column to sort. &uarr; higher is better, &darr; lower is better; "
        "brackets hold the bootstrap 95% interval where the run measured one.</p>"
    )
    for source, heading in (("measured", "Measured"), ("reported", "Reported (copied from papers, see the citation)")):
        rows = table[table["source"] == source]
        if rows.empty:
            continue
        records = rows.to_dict("records")
        shown = [m for m in metrics if rows[m].notna().any()]
        head = "".join(f"<th>{escape(c)}</th>" for c in ("method", "bench"))
        head += "".join(f"<th>{escape(m)} {'&uarr;' if higher_is_better(m, *records) else '&darr;'}</th>" for m in shown)
        extra = "citation" if source == "reported" else "date"
        head += f"<th>coverage</th><th>protocol</th><th>{extra}</th>"
        body = []
        for row in records:
            cells = [
                f'<td data-value="{escape(row["method"])}">{escape(row["method"])}{" <b>SMOKE</b>" if row["smoke"] else ""}'
                f"{' <b>PARTIAL</b>' if 'PARTIAL' in coverage_label(row) else ''}</td>",
                f'<td data-value="{escape(row["bench"])}">{escape(row["bench"])}</td>',
            ]
            for m in shown:
                value = row.get(m)
                if not _number(value):
                    cells.append('<td data-value="">—</td>')
                    continue
                low, high = row.get(m + "_ci_low"), row.get(m + "_ci_high")
                ci = f'<br><span class="ci">[{low:.3f}, {high:.3f}]</span>' if _number(low) and _number(high) else ""
                cells.append(f'<td data-value="{float(value)!r}">{value:.3f}{ci}</td>')
            covered = escape(coverage_label(row))
            cells.append(f'<td class="coverage" data-value="{covered}">{covered}</td>')
            protocol = protocol_label(row)
            cells.append(f'<td class="protocol" data-value="{escape(protocol)}">{escape(protocol)}</td>')
            note = row.get(extra)
            text = escape(note) if isinstance(note, str) else ""
            cells.append(f'<td class="note" data-value="{text}">{text}</td>')
            body.append(("<tr class='smoke-row'>" if row["smoke"] else "<tr>") + "".join(cells) + "</tr>")
        parts += [
            f"<h2>{escape(heading)}</h2>",
            f'<table class="leaderboard {source}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>',
        ]
    return html_page(title, "\n".join(parts) + _SORT_SCRIPT)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- a training run -------------------------------------------------------------------------------

TRAIN_CURVES = ("loss", "lr", "grad_norm")
TRAIN_SMOKE_NOTE = "SMOKE RUN: random-weight models (a tiny base or tiny metric models); these losses and scores mean nothing"


def is_training_folder(path: str | Path) -> bool:
    return (Path(path) / TRAIN_LOG).is_file()


def read_training_log(folder: str | Path) -> list[dict[str, Any]]:
    """The step records of a training folder (:mod:`picbench.trainlog`: a torn last line is left
    out, any other damaged line is an error naming file and line)."""
    log = Path(folder) / TRAIN_LOG
    records, _ = read_log(log)
    if not records:
        raise PicbenchError(f"{log}: no training steps logged yet")
    return records


def build_training_report(folder: str | Path) -> str:
    """One page of training curves: loss, learning rate and gradient norm per step, and the
    benchmark's scores of the validation subset (CLIP-I, DINO, IoU/mIoU, ...) at each evaluation."""
    folder = Path(folder)
    records = read_training_log(folder)
    curves = {name: [(r["step"], v) for r in records if (v := finite(r.get(name))) is not None] for name in TRAIN_CURVES}
    scores: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for key, value in (r.get("eval") or {}).items():
            if (number := finite(value)) is not None and not key.startswith("n_"):
                scores.setdefault(key, []).append((r["step"], number))
    smoke = any(r.get("smoke") is True for r in records)
    body = [
        f"<h1>training: {escape(folder.name)}{' (SMOKE RUN)' if smoke else ''}</h1>",
        *([f'<div class="smoke" role="alert">{escape(TRAIN_SMOKE_NOTE)}</div>'] if smoke else []),
        key_value_table(
            {
                "steps logged": str(len(records)),
                "last step": str(records[-1]["step"]),
                "stages": ", ".join(dict.fromkeys(str(r.get("stage", "")) for r in records)),
                "skipped pairs": str(records[-1].get("skipped", 0)),
            }
        ),
    ]
    body.append(f'<h2>optimisation</h2><img alt="training curves" src="data:image/png;base64,{_curves_png(curves)}">')
    if scores:
        body.append(
            f'<h2>validation scores (the benchmark, during training)</h2><img alt="validation scores" src="data:image/png;base64,{_curves_png(scores)}">'
        )
    else:
        body.append("<p>no evaluation logged (set <code>eval.every</code> in the config)</p>")
    return html_page(f"training {folder.name}", "\n".join(body))


def _curves_png(series: Mapping[str, Sequence[tuple[int, float]]]) -> str:
    """One line panel per series, step on x; base64 PNG."""
    from matplotlib.figure import Figure

    names = [n for n, points in series.items() if points]
    fig = Figure(figsize=(3.2 * max(1, len(names)), 2.6), dpi=96)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.86, bottom=0.18, wspace=0.35)
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    for ax, name in zip(axes, names):
        steps, values = zip(*series[name])
        ax.plot(steps, values, color="#4c72b0", marker="o" if len(steps) < 20 else None, markersize=3)
        ax.set_title(plain_label(name))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
