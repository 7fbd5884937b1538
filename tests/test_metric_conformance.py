"""The metric suite (:mod:`picbench.testing.metrics`) over every registered metric, and a broken
metric of each kind failing it with a message naming the metric."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from grounded_samples import _one_thread  # noqa: F401 (autouse fixture)

from picbench.metrics import METRICS
from picbench.metrics.base import Features, Metric
from picbench.records import Sample, Score
from picbench.testing import metrics as suite
from picbench.testing import parametrize


@parametrize(METRICS)
def test_every_registered_metric_conforms(name: str, data_dir: Path) -> None:
    suite.check_metric(name, data_dir)


class _Grey(Metric):
    """A well-formed metric, the base of the broken ones below: the mean grey level of the CLIP embedding's sign."""

    name = "grey"
    summary = "conformance test metric"
    needs = frozenset({"clip"})

    def item(self, features: Features, subjects: Sequence[Mapping[str, float | None]]) -> Mapping[str, float | None]:
        clip = features.embeddings.get("clip")
        return {self.name: float((clip > 0).mean()) if clip is not None else None}


class Undirected(_Grey):
    name = "undirected"

    def direction(self, key: str) -> bool:
        return None  # type: ignore[return-value]


class KeyNeverAggregated(_Grey):
    name = "lost_key"

    def keys(self) -> tuple[str, ...]:
        return (self.name, "extra")

    def outputs(self) -> tuple[str, ...]:
        return (self.name,)


class UnknownNeed(_Grey):
    name = "unknown_need"
    needs = frozenset({"clip", "depth_map"})


class InventsAZero(_Grey):
    name = "invents_zero"

    def item(self, features: Features, subjects: Sequence[Mapping[str, float | None]]) -> Mapping[str, float | None]:
        return {self.name: 0.0}


class CountsUnscoredAsZero(_Grey):
    name = "counts_zero"

    def aggregate(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> dict[str, float | None]:
        return {self.name: sum(sc.metrics.get(self.name) or 0.0 for sc in scores)}


class EmptySplitValue(_Grey):
    name = "empty_split"

    def aggregate(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> dict[str, float | None]:
        return {**super().aggregate(scores, samples), f"{self.name}.multi": 0.5}


def test_a_well_formed_metric_passes_the_checks_that_need_no_registration() -> None:
    suite.check_metric(_Grey)


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (Undirected, "direction() gives no bool for ['undirected']"),
        (KeyNeverAggregated, "item keys ['extra'] are not among outputs() ['lost_key']"),
        (UnknownNeed, "needs ['depth_map'], which the engine does not compute"),
        (InventsAZero, "with nothing computed scored {'invents_zero': 0.0}: it must give None or raise Unscorable"),
        (CountsUnscoredAsZero, "aggregate over no scores gives {'counts_zero': 0}: unscored items must be left out"),
        (EmptySplitValue, "gives empty_split.multi=0.5, but no multi item was scored"),
    ],
    ids=lambda case: getattr(case, "name", ""),
)
def test_a_broken_metric_fails_the_suite_naming_it(metric: type[Metric], message: str) -> None:
    with pytest.raises(AssertionError) as failed:
        suite.check_metric(metric)
    assert str(failed.value).startswith(f"metric {metric.name!r} (test_metric_conformance:{metric.__qualname__}): ")
    assert message in str(failed.value)
