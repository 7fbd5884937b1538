"""Aggregation of a run's Scores: each metric's aggregate under each identity set it is computed
under, and bootstrap 95% intervals of every aggregate (:mod:`picbench.metrics.bootstrap`), cached
under the engine's fingerprint and the scores so a rerun recomputes nothing."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from picbench.metrics.base import Metric
from picbench.metrics.cache import EmbeddingCache
from picbench.metrics.selection import MetricSelection
from picbench.records import Sample, Score

log = logging.getLogger(__name__)


def aggregate(selection: MetricSelection, scores: Sequence[Score], samples: Mapping[str, Sample]) -> dict[str, float | int | None]:
    """Each metric's aggregate (means over items, failed items excluded, per split where the
    split occurs; AP over the run), plus item and failure counts. A plug-in whose aggregate
    raises gets None values and a logged warning."""
    out: dict[str, float | int | None] = {}
    for metric in selection.metrics:
        for identity in selection.sets_of(metric):
            view = identity_view(selection, scores, metric, identity)
            try:
                found = metric.aggregate(view, samples)
            except Exception as exc:
                log.warning("metric %s failed to aggregate: %s: %s", metric.name, type(exc).__name__, exc)
                found = dict.fromkeys(metric.outputs())
            out.update({selection.key(k, identity): v for k, v in found.items()})
    out["n_items"] = len(scores)
    out["n_failures"] = sum(1 for sc in scores if sc.failures)
    return out


def identity_view(selection: MetricSelection, scores: Sequence[Score], metric: Metric, identity: str) -> Sequence[Score]:
    """The scores as ``metric`` sees them under an identity set: its ``KEY@SET`` values under
    its plain keys (the scores themselves for the primary set)."""
    if identity == selection.primary:
        return scores
    keys = {k: selection.key(k, identity) for k in metric.keys()}
    return [replace(sc, metrics={**sc.metrics, **{k: sc.metrics.get(v) for k, v in keys.items()}}) for sc in scores]


def intervals(
    selection: MetricSelection,
    scores: Sequence[Score],
    samples: Mapping[str, Sample],
    fingerprint: Mapping[str, Any],
    cache: EmbeddingCache | None,
) -> dict[str, tuple[float, float]]:
    """Bootstrap 95% intervals of every aggregate; ``fingerprint`` (what decides the scores) keys
    the cached set with the scores themselves."""
    from picbench.metrics import bootstrap

    payload = json.dumps([fingerprint, [sc.to_dict() for sc in scores], sorted(samples)], sort_keys=True, default=str)
    key = hashlib.sha256(payload.encode()).hexdigest()
    stored = cache.get_json("intervals", key) if cache is not None else None
    if stored is not None:  # the same scores: a rerun recomputes nothing
        return {k: (v[0], v[1]) for k, v in stored.items()}
    out: dict[str, tuple[float, float]] = {}
    complete = True
    for metric in selection.metrics:
        for identity in selection.sets_of(metric):
            view = identity_view(selection, scores, metric, identity)
            try:
                if type(metric).aggregate is Metric.aggregate:
                    found = bootstrap.mean_intervals(view, samples, metric.outputs())
                else:
                    found = bootstrap.run_level_intervals(view, lambda resample, m=metric: m.bootstrap_statistic(resample, samples))
            except Exception as exc:
                complete = False
                log.warning("metric %s: no bootstrap interval: %s: %s", metric.name, type(exc).__name__, exc)
                continue
            out.update({selection.key(k, identity): v for k, v in found.items()})
    if cache is not None and complete:  # a partial set (a package missing, say) is computed again next time, never served
        cache.put_json("intervals", key, {k: list(v) for k, v in out.items()})
    return out
