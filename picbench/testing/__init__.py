"""Conformance suites over picbench's registries, for picbench's own tests and for plug-in authors.

Each ``check_*`` function runs one registry's contract on one entry (a registered name or the
class itself), with tiny random-weight models (:mod:`picbench.tiny`) and the real data where the
contract needs images, and raises AssertionError naming the entry (kind, name and import target)
and what broke. :func:`parametrize` turns a registry, or one distribution's entry points in it,
into a pytest parametrization; nothing here needs pytest fixtures. Docs: docs/contributing.md,
"Conformance suites"."""

from __future__ import annotations

from picbench.testing.attention import check_attention_backend
from picbench.testing.benches import check_bench, check_buildable_bench
from picbench.testing.detectors import check_detector
from picbench.testing.methods import check_method
from picbench.testing.metric_models import check_metric_model
from picbench.testing.metrics import check_metric
from picbench.testing.registries import parametrize, registered

__all__ = [
    "check_attention_backend",
    "check_bench",
    "check_buildable_bench",
    "check_detector",
    "check_method",
    "check_metric",
    "check_metric_model",
    "parametrize",
    "registered",
]
