"""``picbench ls [benches|methods|metrics]``: what can be run, as rich tables."""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from picbench.cli.app import app, console


class Listing(str, Enum):
    benches = "benches"
    methods = "methods"
    metrics = "metrics"
    detectors = "detectors"
    protocols = "protocols"


def bench_table() -> Table:
    from picbench.benches import BENCHES, BUILDABLE, built_benches

    table = Table(title="benches")
    for column in ("name", "kind", "summary", "file"):
        table.add_column(column, overflow="fold")
    built = built_benches()
    for entry in BENCHES.entries():
        table.add_row(entry.name, "loader", escape(entry.summary), "")
    for name, path in built.items():
        if name not in BENCHES:
            table.add_row(name, "built", escape(BUILDABLE.summary(name) if name in BUILDABLE else ""), escape(str(path)))
    for entry in BUILDABLE.entries():
        if entry.name not in built:
            table.add_row(entry.name, "buildable", escape(entry.summary), f"not built: picbench bench build {entry.name}")
    return table


def protocol_table() -> Table:
    """Each named protocol with its fields and the benches that declare it; the weights hashes are
    resolved when a run loads the models (results.json records them)."""
    from picbench.metrics.weights import hub_id
    from picbench.protocols import BENCH_PROTOCOLS, IDENTITY_SETS, PROTOCOLS

    table = Table(title="protocols (--protocols picks the identity set: " + ", ".join(IDENTITY_SETS) + ")")
    for column in ("name", "benches", "fields", "summary"):
        table.add_column(column, overflow="fold")
    for protocol in PROTOCOLS.values():
        benches = sorted(b for b, p in BENCH_PROTOCOLS.items() if p == protocol.name)
        if protocol.name == "picbench":
            benches.append("any other bench")
        fields = {**protocol.fields(), "clip weights": hub_id("clip"), "dino weights": hub_id("dino")}
        table.add_row(
            protocol.name, escape(", ".join(benches)), escape("\n".join(f"{k}: {v}" for k, v in fields.items())), escape(protocol.summary)
        )
    return table


def registry_table(kind: str) -> Table:
    if kind == "methods":
        from picbench.methods import METHODS as registry
    elif kind == "detectors":
        from picbench.metrics.detectors import DETECTORS as registry
    else:
        from picbench.metrics import METRICS as registry
    table = Table(title=kind)
    for column in ("name", "target", "summary", *(("keys",) if kind == "metrics" else ())):
        table.add_column(column)
    for entry in registry.entries():
        extra = (metric_keys(registry, entry.name),) if kind == "metrics" else ()
        table.add_row(entry.name, escape(entry.target), escape(entry.summary), *extra)
    return table


def metric_keys(registry: Any, name: str) -> str:
    """The aggregate keys a metric writes with their direction (up: higher is better), or why it cannot be loaded."""
    try:
        metric = registry.get(name)()
        return " ".join(f"{key} {'↑' if metric.direction(key) else '↓'}" for key in metric.outputs())
    except Exception as exc:  # a broken plug-in is listed, not fatal
        return escape(f"cannot load: {type(exc).__name__}: {exc}")


@app.command("ls")
def ls(what: Listing | None = typer.Argument(None, help="benches, methods, metrics, detectors or protocols (all when omitted)")) -> None:
    """List benches (registered, built and buildable), methods, metrics and detectors (plug-ins
    included), and the protocols benches declare."""
    kinds = [what.value] if what is not None else [k.value for k in Listing]
    for kind in kinds:
        table = bench_table() if kind == "benches" else protocol_table() if kind == "protocols" else registry_table(kind)
        if not table.rows:
            table.caption = f"no {kind} registered yet"
        console.print(table)
