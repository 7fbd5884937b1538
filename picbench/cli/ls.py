"""``picbench ls [benches|methods|metrics|detectors|protocols]``: what can be run, as rich tables or
(``--json``) one JSON document."""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from picbench.cli.app import app, console
from picbench.cli.output import emit_json


class Listing(str, Enum):
    benches = "benches"
    methods = "methods"
    metrics = "metrics"
    detectors = "detectors"
    protocols = "protocols"


def bench_records() -> list[dict[str, str]]:
    """Registered, built and buildable benches: name, kind, summary and file (or how to build it)."""
    from picbench.benches import BENCHES, BUILDABLE, built_benches

    built = built_benches()
    records = [{"name": e.name, "kind": "loader", "summary": e.summary, "file": ""} for e in BENCHES.entries()]
    records += [
        {"name": name, "kind": "built", "summary": BUILDABLE.summary(name) if name in BUILDABLE else "", "file": str(path)}
        for name, path in built.items()
        if name not in BENCHES
    ]
    records += [
        {"name": e.name, "kind": "buildable", "summary": e.summary, "file": f"not built: picbench bench build {e.name}"}
        for e in BUILDABLE.entries()
        if e.name not in built
    ]
    return records


def registry_records(kind: str) -> list[dict[str, str]]:
    """Methods, metrics or detectors: name, target, summary (metrics: their keys and directions)."""
    if kind == "methods":
        from picbench.methods import METHODS as registry
    elif kind == "detectors":
        from picbench.metrics.detectors import DETECTORS as registry
    else:
        from picbench.metrics import METRICS as registry
    records = []
    for entry in registry.entries():
        record = {"name": entry.name, "target": entry.target, "summary": entry.summary}
        if kind == "metrics":
            record["keys"] = metric_keys(registry, entry.name)
        records.append(record)
    return records


def protocol_records() -> list[dict[str, str]]:
    """Each named protocol with its fields and the benches that declare it; the weights hashes are
    resolved when a run loads the models (results.json records them)."""
    from picbench.metrics.weights import hub_id
    from picbench.protocols import BENCH_PROTOCOLS, PROTOCOLS

    records = []
    for protocol in PROTOCOLS.values():
        benches = sorted(b for b, p in BENCH_PROTOCOLS.items() if p == protocol.name)
        if protocol.name == "picbench":
            benches.append("any other bench")
        fields = {**protocol.fields(), "clip weights": hub_id("clip"), "dino weights": hub_id("dino")}
        records.append(
            {
                "name": protocol.name,
                "benches": ", ".join(benches),
                "fields": "; ".join(f"{k}: {v}" for k, v in fields.items()),
                "summary": protocol.summary,
            }
        )
    return records


COLUMNS = {"benches": ("name", "kind", "summary", "file"), "protocols": ("name", "benches", "fields", "summary")}


def listing_table(kind: str, records: list[dict[str, str]]) -> Table:
    columns = COLUMNS.get(kind) or ("name", "target", "summary", *(("keys",) if kind == "metrics" else ()))
    if kind == "protocols":
        from picbench.protocols import IDENTITY_SETS

        table = Table(title="protocols (--protocols picks the identity set: " + ", ".join(IDENTITY_SETS) + ")")
    else:
        table = Table(title=kind)
    for column in columns:
        table.add_column(column)
    for record in records:
        table.add_row(*(escape(record[c]) for c in columns))
    if not table.rows:
        table.caption = f"no {kind} registered yet"
    return table


def metric_keys(registry: Any, name: str) -> str:
    """The aggregate keys a metric writes with their direction (up: higher is better), or why it cannot be loaded."""
    try:
        metric = registry.get(name)()
        return " ".join(f"{key} {'↑' if metric.direction(key) else '↓'}" for key in metric.outputs())
    except Exception as exc:  # a broken plug-in is listed, not fatal
        return f"cannot load: {type(exc).__name__}: {exc}"


@app.command("ls")
def ls(
    what: Listing | None = typer.Argument(None, help="benches, methods, metrics, detectors or protocols (all when omitted)"),
    as_json: bool = typer.Option(False, "--json", help="print the listing as JSON on stdout (an object per kind)"),
) -> None:
    """List benches (registered, built and buildable), methods, metrics and detectors (plug-ins
    included), and the protocols benches declare."""
    kinds = [what.value] if what is not None else [k.value for k in Listing]
    listing = {
        kind: bench_records() if kind == "benches" else protocol_records() if kind == "protocols" else registry_records(kind)
        for kind in kinds
    }
    if as_json:
        emit_json(listing)
        return
    for kind, records in listing.items():
        console.print(listing_table(kind, records))
