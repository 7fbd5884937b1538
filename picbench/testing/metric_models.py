"""The metric-model suite: an entry of ``METRIC_MODELS`` (entry-point group ``picbench.metric_models``)
is a MetricModel whose role is its registered name and whose hub id is ``owner/name``; offline,
with no weights stored for it, the engine's lookup fails with a MissingWeightsError naming that
hub id (a model the machine already holds resolves, and that part is left unchecked)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from picbench.errors import MissingWeightsError
from picbench.metrics.weights import METRIC_MODELS, MetricModel, resolve
from picbench.testing.offline import offline
from picbench.testing.registries import require
from picbench.testing.registries import resolve as resolve_entry

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_metric_model(entry: str | MetricModel) -> None:
    """Every check of the metric-model suite on a registered role or a MetricModel."""
    if isinstance(entry, str):
        name, model, label = resolve_entry(METRIC_MODELS, entry)
    else:
        name, model, label = entry.role, entry, f"metric model {entry.role!r} ({entry.hub_id})"
    require(isinstance(model, MetricModel), label, f"is a {type(model).__name__}, not a MetricModel")
    require(model.role == name, label, f"its role {model.role!r} is not the name it is registered under")
    require(bool(HUB_ID.match(model.hub_id)), label, f"hub id {model.hub_id!r} is not owner/name")
    with tempfile.TemporaryDirectory(prefix="picbench-conformance-") as tmp, offline(Path(tmp) / "empty-cache"):
        try:
            resolve(model.role, model.hub_id, weights_dir=Path(tmp) / "no-weights")
        except MissingWeightsError as exc:
            require(model.hub_id in str(exc), label, f"the missing-weights error {str(exc)!r} does not name {model.hub_id}")
