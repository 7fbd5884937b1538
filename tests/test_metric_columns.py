"""The report and the leaderboard take their metric columns from the metrics registry: each
registered metric's outputs in registration order (overall, then per split), the keys of no
registered metric after them, sorted; the values beside each image are the headline metrics'."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import pytest

import picbench.metrics
from picbench.leaderboard import build_leaderboard, metric_columns
from picbench.metrics import headline_keys, output_keys
from picbench.metrics.base import Features, Metric
from picbench.registry import Registry
from picbench.report import aggregate_table

# the column order of leaderboards exported before the registry gave it (leaderboards/*.csv)
EXPORTED_ORDER = (
    "clip_i",
    "clip_t",
    "dino",
    "clip_i_crop",
    "dino_crop",
    "vlm_judge",
    "iou",
    "ap",
    "ap50",
    "ap75",
    "occlusion_order",
    "present_once",
    "missing",
    "duplicated",
)


class GrayShare(Metric):
    name = "gray_share"
    summary = "share of background-gray pixels"
    needs = frozenset({"image"})
    higher_is_better = False
    headline = True

    def item(self, features: Features, subjects: Sequence[Mapping[str, float | None]]) -> Mapping[str, float | None]:
        return {self.name: 0.0}


@pytest.fixture()
def registry_with_a_new_metric(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry[type[Metric]]]:
    """clip_i, then a new metric, then presence: a registry as a plug-in would extend it."""
    registry: Registry[type[Metric]] = Registry("metric", base=Metric)
    registry.register("clip_i", "picbench.metrics.similarity:ClipI")
    registry.register("gray_share", "test_metric_columns:GrayShare")
    registry.register("presence", "picbench.metrics.presence:SubjectPresence")
    monkeypatch.setattr(picbench.metrics, "METRICS", registry)
    output_keys.cache_clear(), headline_keys.cache_clear()
    yield registry
    output_keys.cache_clear(), headline_keys.cache_clear()


def test_the_built_in_order_is_the_exported_one() -> None:
    """Built-ins first, as exported; a metric registered later (a plug-in, or a test's) follows them."""
    assert output_keys()[: len(EXPORTED_ORDER)] == EXPORTED_ORDER
    assert headline_keys()[:6] == ("clip_i", "clip_t", "dino", "vlm_judge", "iou", "occlusion_order")


def test_a_registered_metric_gets_its_columns_in_registry_order(registry_with_a_new_metric: Registry[type[Metric]]) -> None:
    metrics = {"zeta": 1.0, "missing": 0.1, "gray_share.multi": 0.2, "alpha": 0.5, "gray_share": 0.3, "clip_i.single": 0.7, "clip_i": 0.8}
    row = {"method": "m", "bench": "b", "source": "measured", "smoke": False, "origin": "", **metrics}
    table = build_leaderboard([row])
    assert metric_columns(table) == ["clip_i", "clip_i.single", "gray_share", "gray_share.multi", "missing", "alpha", "zeta"]
    assert list(aggregate_table(metrics).index) == ["clip_i", "gray_share", "missing", "alpha", "zeta"]
    assert headline_keys() == ("clip_i", "gray_share")
