"""The metric-model suite (:mod:`picbench.testing.metric_models`) over every registered metric
model, and malformed ones failing it with a message naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from picbench.errors import MissingWeightsError
from picbench.metrics.weights import METRIC_MODELS, MetricModel, resolve
from picbench.testing import check_metric_model, parametrize
from picbench.testing.offline import offline


@parametrize(METRIC_MODELS)
def test_every_registered_metric_model_conforms(name: str) -> None:
    check_metric_model(name)


def test_a_model_without_an_owner_in_its_hub_id_fails_naming_it() -> None:
    with pytest.raises(AssertionError, match=r"^metric model 'dino' \(dinov2-small\): hub id 'dinov2-small' is not owner/name$"):
        check_metric_model(MetricModel("dino", "dinov2-small"))


def test_a_model_stored_nowhere_takes_the_missing_weights_branch(tmp_path: Path) -> None:
    model = MetricModel("dino", "nobody/no-such-dino")
    check_metric_model(model)
    with offline(tmp_path / "cache"), pytest.raises(MissingWeightsError, match="nobody/no-such-dino"):
        resolve(model.role, model.hub_id, weights_dir=tmp_path / "no-weights")  # what the check asserted on
