"""The HTML building blocks every picbench page shares (run reports, comparisons, the leaderboard
page, pair-set reports): escaping, box outlines, fact tables, and one page shell with its style, the
subject colours and thumbnail sizes."""

from __future__ import annotations

import html
from collections.abc import Mapping

SUBJECT_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
"""A subject's colour (its boxes, its references' frames, its legend swatch) by subject index, on every page."""
THUMBNAIL_PX = 320
"""The longer side of a generated or target image as a page inlines it."""
REFERENCE_PX = 96
"""The longer side of a reference image as a page inlines it."""


def svg_rect(x0: float, y0: float, x1: float, y1: float, colour: str, stroke: float, dash: float | None, label: str) -> str:
    """One box outline over an image (pixel coordinates), dashed when ``dash`` is given, titled ``label``."""
    dashed = f' stroke-dasharray="{dash:.1f} {dash * 0.6:.1f}"' if dash else ""
    return (
        f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0, 0):.1f}" height="{max(y1 - y0, 0):.1f}" fill="none" '
        f'stroke="{colour}" stroke-width="{stroke:.1f}"{dashed}><title>{escape(label)}</title></rect>'
    )


def key_value_table(facts: Mapping[str, str]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts.items())
    return f'<table class="facts">{rows}</table>'


def escape(text: object) -> str:
    """Any value as HTML text: every page treats names, prompts and errors as text, never markup."""
    return html.escape(str(text), quote=True)


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1400px}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9rem}th,td{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right}
table.facts th,table.facts td{text-align:left}table.facts td{font-family:monospace;word-break:break-all}
.smoke,.partial{background:#c62828;color:#fff;font-weight:bold;padding:.8rem 1rem;font-size:1.1rem;margin:1rem 0}
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
.pair{display:flex;gap:.3rem;align-items:flex-start}.pair .frame{flex:1}
.refs{display:flex;flex-direction:column;gap:.2rem}.ref{width:64px;height:auto;border:3px solid;display:block}
div.ref{font-size:.65rem;padding:.2rem}
.ci{color:#777;font-size:.75rem;white-space:nowrap}
table.compare td,table.compare th{vertical-align:top;text-align:left;min-width:180px}table.compare .frame{width:240px}
table.compare .refs{flex-direction:row;flex-wrap:wrap}.scores{font-size:.75rem;font-family:monospace}
.fail{color:#a00;font-size:.75rem}
table.leaderboard th{cursor:pointer;user-select:none}table.leaderboard td:first-child,table.leaderboard th:first-child{text-align:left}
tr.smoke-row{background:#fde8e8}table.leaderboard td.note{text-align:left;font-size:.72rem;min-width:16rem;max-width:28rem}
"""


def html_page(title: str, body: str) -> str:
    """A whole self-contained page in the house style (inline CSS, nothing fetched)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
