"""One self-contained HTML page of a pair set: its stats, then a card per pair with the references,
the target with every subject's box (a colour per subject, depth rank in the legend) and the
filter's scores and verdict. Images are inlined as JPEG thumbnails; the page fetches nothing.
Built from the parts every page shares (``picbench.html``) so it looks and escapes like the run report."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from picbench.atomic import atomic_write
from picbench.errors import ImageError
from picbench.html import REFERENCE_PX, SUBJECT_COLOURS, THUMBNAIL_PX, escape, html_page, key_value_table, svg_rect
from picbench.imaging import load_rgb
from picbench.pairs import bmpds_meta, pairs_file, read_pairs, reference_paths, target_path
from picbench.pairs.stats import pair_stats
from picbench.records import Bench, Sample

DEFAULT_MAX_PAIRS = 96


def _jpeg(path: Path, size: int) -> tuple[str, tuple[int, int]]:
    picture = load_rgb(path)
    full = picture.size
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode("ascii"), full


def pair_card(pairs: Bench, sample: Sample) -> str:
    head = f"<b>{escape(sample.id)}</b> ({sample.split})<br><i>{escape(sample.prompt)}</i>"
    try:
        data, (width, height) = _jpeg(target_path(pairs, sample), THUMBNAIL_PX)
        refs = [_jpeg(p, REFERENCE_PX)[0] for p in reference_paths(pairs, sample)]
    except ImageError as exc:
        return f'<figure class="card failed"><div class="missing">{escape(exc)}</div><figcaption>{head}</figcaption></figure>'
    stroke = max(width, height) / 110
    boxes, legend = [], []
    for i, sub in enumerate(sample.subjects):
        colour = SUBJECT_COLOURS[i % len(SUBJECT_COLOURS)]
        if sub.box is not None:
            boxes.append(
                svg_rect(
                    sub.box[0] * width,
                    sub.box[1] * height,
                    sub.box[2] * width,
                    sub.box[3] * height,
                    colour,
                    stroke,
                    None,
                    f"{sub.name} (depth {sub.depth})",
                )
            )
        legend.append(
            f'<span class="subject"><span class="swatch" style="background:{colour}"></span>{escape(sub.name)} d{sub.depth}'
            f'<img alt="reference of {escape(sub.name)}" style="height:3rem;vertical-align:middle;margin-left:.2rem" '
            f'src="data:image/jpeg;base64,{refs[i]}"></span>'
        )
    bmpds = bmpds_meta(sample)
    scores = bmpds.get("scores") or {}
    verdict = (bmpds.get("filter") or {}).get("reason")
    facts = "".join(f"<div>{escape(k)}: {escape(_fmt(v))}</div>" for k, v in scores.items())
    stage = str(bmpds.get("stage") or sample.meta.get("builder", ""))
    return (
        f'<figure class="card"><div class="frame"><img alt="{escape(sample.id)}" src="data:image/jpeg;base64,{data}">'
        f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none">{"".join(boxes)}</svg></div>'
        f"<figcaption>{head}<div>{''.join(legend)}</div><div>stage: {escape(stage)}</div>{facts}"
        + (f"<div>{escape(verdict)}</div>" if verdict else "")
        + "</figcaption></figure>"
    )


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def write_pairs_report(path: str | Path, out: str | Path, *, max_pairs: int = DEFAULT_MAX_PAIRS) -> Path:
    """Write the page; the first ``max_pairs`` pairs get a card (the stats cover all)."""
    pairs = read_pairs(path)
    stats = pair_stats(path)
    smoke = any((bmpds_meta(s, pairs_file(path)).get("models") or {}).get("models") == "tiny" for s in pairs.samples)
    facts = {
        "pairs": str(stats.n_pairs),
        "splits": ", ".join(f"{k} {v}" for k, v in sorted(stats.splits.items())),
        **{f"stage {k}": ", ".join(f"{s} {n}" for s, n in sorted(v.items())) for k, v in sorted(stats.stages.items())},
        **({"dropped/failed at": ", ".join(f"{k} {v}" for k, v in sorted(stats.levels.items()))} if stats.levels else {}),
    }
    body = [f"<h1>pair set {escape(pairs.name)} v{escape(pairs.version)}</h1>", f"<p>{escape(pairs.description)}</p>"]
    if smoke:
        body.append('<div class="smoke">SMOKE BUILD: random-weight models (models = "tiny"); these images and scores mean nothing</div>')
    body += [
        "<h2>Counts</h2>",
        key_value_table(facts),
        f"<h2>Pairs (first {min(max_pairs, len(pairs))} of {len(pairs)})</h2>",
        '<div class="grid">',
        *(pair_card(pairs, s) for s in pairs.samples[:max_pairs]),
        "</div>",
    ]
    out = Path(out)
    with atomic_write(out) as fh:
        fh.write(html_page(f"pairs {pairs.name}", "\n".join(body)))
    return out
