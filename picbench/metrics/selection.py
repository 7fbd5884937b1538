"""Which metrics a run computes, and under which identity sets: the registry's defaults or the
named ones (with the metrics they require), and the keys and directions that choice writes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from picbench.errors import PicbenchError, UnknownNameError
from picbench.metrics import ALIASES, METRICS
from picbench.metrics.base import Metric
from picbench.protocols import IDENTITY_SETS, metric_key
from picbench.records import Subject

log = logging.getLogger(__name__)


def select_metrics(names: Sequence[str] | None, detector: str | None) -> tuple[Metric, ...]:
    """The metrics to compute, as objects: every default metric whose needs can be met when
    ``names`` is None, else the named ones (aliases such as ``ap50`` select their metric) and the
    metrics they require."""
    if names is None:
        chosen = [n for n in METRICS.names() if _default_metric(n, detector)]
    else:
        chosen = []
        for name in names:
            name = ALIASES.get(name, name)
            if name not in METRICS:
                raise UnknownNameError(METRICS.suggest(name))
            try:
                METRICS.get(name)
            except (ImportError, AttributeError) as exc:
                raise PicbenchError(f"metric {name!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc
            if detector is None and "detector" in METRICS.get(name).needs:
                raise PicbenchError(f"metric {name!r} needs a detector, but detector=None")
            chosen.append(name)
        for name in list(chosen):
            chosen.extend(getattr(METRICS.get(name), "requires", ()))
    return tuple(METRICS.get(n)() for n in dict.fromkeys(chosen))


def _default_metric(name: str, detector: str | None) -> bool:
    """Whether a metric is computed when none is named; a plug-in that cannot be loaded is left
    out with a warning naming it (asked for by name, it is an error)."""
    try:
        metric = METRICS.get(name)
    except Exception as exc:  # a broken third-party entry point must not stop every run
        log.warning("metric %s is left out: it cannot be loaded: %s: %s", name, type(exc).__name__, exc)
        return False
    return metric.default and (detector is not None or "detector" not in metric.needs)


def check_identity_sets(identity_sets: Sequence[str]) -> tuple[str, ...]:
    """The identity sets in order, once each; an empty list or an unknown set is refused."""
    unknown = [s for s in identity_sets if s not in IDENTITY_SETS]
    if not identity_sets or unknown:
        raise PicbenchError(f"identity sets must be among {sorted(IDENTITY_SETS)}, got {list(identity_sets)}")
    return tuple(dict.fromkeys(identity_sets))


def identity_images(subject: Subject, identity: str) -> tuple[str, ...]:
    """The images a subject's identity is scored against: its eval images (``default``, every real
    image of the subject under DreamBooth's protocol) or the references the method was given."""
    return tuple(subject.eval_images) if identity == "default" else tuple(subject.references)


@dataclass(frozen=True)
class MetricSelection:
    """The metrics of a run and the identity sets they are computed under; the first set is the
    primary one, whose keys are plain (``clip_i``), every other set's read ``KEY@SET``."""

    metrics: tuple[Metric, ...]
    identity_sets: tuple[str, ...]

    @property
    def needs(self) -> frozenset[str]:
        return frozenset(n for m in self.metrics for n in m.needs)

    @property
    def primary(self) -> str:
        return self.identity_sets[0]

    def key(self, key: str, identity: str) -> str:
        """``key`` as written under identity set ``identity`` (:func:`picbench.protocols.metric_key`)."""
        return metric_key(key, identity, self.primary)

    def sets_of(self, metric: Metric) -> tuple[str, ...]:
        """The identity sets a metric is computed under: all of them where it scores identity against
        a subject's images, else the primary one only."""
        return self.identity_sets if "references" in metric.needs else self.identity_sets[:1]

    def item_keys(self) -> list[str]:
        return [self.key(k, s) for m in self.metrics for s in self.sets_of(m) for k in m.keys()]

    def directions(self) -> dict[str, bool]:
        """Base metric key -> True where higher is better, for every aggregate written."""
        return {self.key(key, s): m.direction(key) for m in self.metrics for s in self.sets_of(m) for key in m.outputs()}

    def images(self, subject: Subject) -> tuple[str, ...]:
        """Every image a subject's identity is scored against under any of the identity sets."""
        return tuple(dict.fromkeys(p for identity in self.identity_sets for p in identity_images(subject, identity)))
