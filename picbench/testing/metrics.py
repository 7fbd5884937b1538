"""The metric suite: what the engine, the report and ``regress`` rely on of every metric.

- its declaration: a name (the registered one), a summary, needs picbench knows, item keys whose
  non-count keys are all aggregated (``outputs``), no key with a split or identity-set separator,
  a direction (a bool) for every output key, required metrics that are registered;
- an item it cannot score gives None: on features where nothing could be computed (no embeddings,
  references or prompt, the detector failed, the method given no references) every key is None
  or the metric raises ``Unscorable``; only a metric that reads nothing but the image may score it;
- aggregates: no scores, or only unscored ones, give None for every output (never 0); a split
  absent from the scores gets no value; every aggregate key is an output or count, plain or
  ``KEY.SPLIT``;
- through the real engine (tiny models, real references pasted by the ``paste`` method, a tiny
  detector where the metric needs one): every score holds exactly the metric's keys, the metric
  neither raises nor returns a bad value on any item, ``Unscorable`` leaves its keys None, identity
  metrics give None for a method given no references, the aggregate covers the outputs, the engine
  reports a direction for each, and bootstrap intervals are of outputs only, low <= high."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from picbench.metrics import METRICS
from picbench.metrics.base import NEEDS, SPLITS, Features, Metric, Unscorable
from picbench.metrics.detectors.base import DetectorOutput
from picbench.records import Sample, Score
from picbench.testing.registries import require, resolve
from picbench.testing.samples import conformance_samples, data_root

DETECTOR = "grounding-dino"  # the engine's default detector; its tiny model stands in for it
SEPARATORS = (".", "@")  # KEY.SPLIT in aggregates, KEY@SET under a second identity set


def metric_class(entry: str | type[Metric]) -> tuple[str, type[Metric], str]:
    name, cls, label = resolve(METRICS, entry)
    require(isinstance(cls, type) and issubclass(cls, Metric), label, "is not a Metric subclass")
    return name, cls, label


def check_declaration(entry: str | type[Metric]) -> None:
    name, cls, label = metric_class(entry)
    require(bool(cls.name) and cls.name == name, label, f"its name attribute {cls.name!r} is not the name it is registered under")
    require(bool(cls.summary), label, "has no summary (`picbench ls metrics` shows it)")
    unknown = sorted(set(cls.needs) - NEEDS)
    require(not unknown, label, f"needs {unknown}, which the engine does not compute (known: {sorted(NEEDS)})")
    metric = cls()
    keys, outputs = metric.keys(), metric.outputs()
    for what, found in (("keys()", keys), ("outputs()", outputs)):
        require(isinstance(found, tuple) and all(isinstance(k, str) and k for k in found), label, f"{what} is not a tuple of names")
        require(len(set(found)) == len(found), label, f"{what} repeats a key: {list(found)}")
        bad = [k for k in found if any(sep in k for sep in SEPARATORS)]
        require(not bad, label, f"{what} has keys with a reserved separator {SEPARATORS}: {bad}")
    require(bool(outputs), label, "has no outputs(): nothing would be aggregated")
    counts = [k for k in outputs if k.startswith("n_")]
    require(not counts, label, f"outputs() lists counts {counts}: n_ keys are summed, not outputs")
    lost = sorted({k for k in keys if not k.startswith("n_")} - set(outputs))
    require(not lost, label, f"item keys {lost} are not among outputs() {list(outputs)}: they would never be aggregated")
    undirected = [k for k in outputs if not isinstance(metric.direction(k), bool)]
    require(not undirected, label, f"direction() gives no bool for {undirected}: report and regress need one per output")
    missing = [r for r in getattr(cls, "requires", ()) if r not in METRICS]
    require(not missing, label, f"requires metrics that are not registered: {missing}")
    if cls.per_subject:
        require(cls.subject_value is not Metric.subject_value, label, "is per_subject but defines no subject_value")
    else:
        require(cls.item is not Metric.item, label, "defines neither item nor subject_value (per_subject=False)")
    try:
        json.dumps(metric.provenance())
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{label}: provenance() is not JSON: {exc}") from None


def bare_features(sample: Sample, root: Path, image: Any = None) -> Features:
    """What the engine hands a metric for an item where nothing could be computed: no embeddings,
    references or prompt, a failed detector, and a method given no references."""
    return Features(
        sample=sample,
        seed=0,
        uses_references=False,
        size=(sample.width, sample.height),
        data_root=root,
        detections=DetectorOutput((), None, ("conformance: the detector failed",), failed=True),
        image=image,
    )


def check_unscorable_gives_none(entry: str | type[Metric], root: Path | None = None) -> None:
    name, cls, label = metric_class(entry)
    if set(cls.needs) <= {"image"} and not cls.identity:
        return  # it reads only the image, which every scored item has
    from PIL import Image

    metric = cls()
    for sample in conformance_samples():
        image = Image.new("RGB", (sample.width, sample.height), (90, 120, 60)) if "image" in cls.needs else None
        features = bare_features(sample, Path(root) if root is not None else Path("."), image)
        subjects = [{cls.name: _subject_value(metric, features, s, label)} if cls.per_subject else {} for s in range(len(sample.subjects))]
        try:
            found = metric.item(features, subjects)
        except Unscorable:
            found = {}
        except Exception as exc:
            raise AssertionError(f"{label}: sample {sample.id} with nothing computed raised {type(exc).__name__}: {exc}") from exc
        scored = {k: found.get(k) for k in metric.keys() if found.get(k) is not None}
        scored.update({f"{sample.subjects[s].name}:{cls.name}": v[cls.name] for s, v in enumerate(subjects) if v.get(cls.name) is not None})
        require(not scored, label, f"sample {sample.id} with nothing computed scored {scored}: it must give None or raise Unscorable")


def _subject_value(metric: Metric, features: Features, subject: int, label: str) -> float | None:
    try:
        return metric.subject_value(features, subject)
    except Unscorable:
        return None
    except Exception as exc:
        raise AssertionError(
            f"{label}: sample {features.sample.id} subject {subject} with nothing computed raised {type(exc).__name__}: {exc}"
        ) from exc


def _scores(keys: Sequence[str], samples: Sequence[Sample]) -> list[Score]:
    return [Score(s.id, 0, dict.fromkeys(keys), failures=("conformance: unscored",)) for s in samples]


def check_aggregate_shapes(entry: str | type[Metric]) -> None:
    _, cls, label = metric_class(entry)
    metric = cls()
    samples = conformance_samples()
    by_id = {s.id: s for s in samples}
    cases = {
        "no scores": ([], {}),
        "only unscored items": (_scores(metric.keys(), samples), by_id),
        "only single-split items, unscored": (_scores(metric.keys(), [s for s in samples if s.split == "single"]), by_id),
    }
    for case, (scores, known) in cases.items():
        try:
            out = metric.aggregate(scores, known)
        except Exception as exc:
            raise AssertionError(f"{label}: aggregate over {case} raised {type(exc).__name__}: {exc}") from exc
        check_aggregate_keys(label, metric, out, present={known[sc.sample_id].split for sc in scores}, case=case)
        scored = {k: v for k, v in out.items() if not k.split(".")[0].startswith("n_") and v is not None}
        require(not scored, label, f"aggregate over {case} gives {scored}: unscored items must be left out, never counted")


def check_aggregate_keys(label: str, metric: Metric, out: Mapping[str, Any], present: set[str], case: str) -> None:
    """Every output aggregated; every key an output or count, plain or KEY.SPLIT of a split present."""
    allowed = set(metric.outputs()) | set(metric.keys())
    missing = [k for k in metric.outputs() if k not in out]
    require(not missing, label, f"aggregate over {case} lacks outputs {missing}")
    for key, value in out.items():
        base, _, split = key.partition(".")
        require(base in allowed, label, f"aggregate over {case} writes {key!r}, which is neither an output nor an item key")
        if split:
            require(split in SPLITS, label, f"aggregate over {case} writes {key!r}: {split!r} is not a split {SPLITS}")
            require(
                split in present or value is None, label, f"aggregate over {case} gives {key}={value!r}, but no {split} item was scored"
            )


def check_in_engine(entry: str, root: Path | None = None, detector: str = DETECTOR) -> None:
    """The metric run by the real engine with tiny models on the conformance samples (see the module docstring)."""
    from picbench.methods.paste import PasteMethod
    from picbench.metrics.decoding import ScoreItem
    from picbench.metrics.engine import MetricEngine

    name, cls, label = metric_class(entry)
    require(isinstance(entry, str), label, "the engine runs registered metrics only: pass its registered name")
    root = data_root(root)
    samples = conformance_samples()
    images = PasteMethod(models="tiny").generate(samples, 0, root)
    wants_detector = bool({"detector", "crops"} & set(cls.needs))
    engine = MetricEngine(models="tiny", metrics=[name], detector=detector if wants_detector else None, batch_size=4)
    items = [ScoreItem(s, 0, None, image=im) for s, im in zip(samples, images)]
    items += [ScoreItem(s, 1, None, uses_references=False, image=im) for s, im in zip(samples, images)]
    scores = list(engine.score(items, root))
    require(len(scores) == len(items), label, f"the engine gave {len(scores)} scores for {len(items)} items")
    own = [m for m in engine.metrics if m.name == name][0]
    keys = set(engine.item_keys())
    for item, score in zip(items, scores):
        where = f"sample {item.sample.id} seed {item.seed}"
        require(keys <= set(score.metrics), label, f"{where}: the score lacks keys {sorted(keys - set(score.metrics))}")
        broken = [f for f in score.failures if f.startswith(f"metric {name} failed")]
        require(not broken, label, f"{where}: {'; '.join(broken)}")
        if any(f.startswith(f"metric {name}:") for f in score.failures):
            left = {k: score.metrics[k] for k in own.keys() if score.metrics[k] is not None}
            require(not left, label, f"{where}: raised Unscorable but kept values {left}")
        if cls.identity and not item.uses_references:
            left = {k: score.metrics[k] for k in own.keys() if score.metrics[k] is not None}
            require(not left, label, f"{where}: scored identity {left} for a method given no references")
    by_id = {s.id: s for s in samples}
    aggregate = {k: v for k, v in engine.aggregate(scores, by_id).items() if k not in ("n_items", "n_failures")}
    own_aggregate = {k: v for k, v in aggregate.items() if k.partition(".")[0] in set(own.outputs()) | set(own.keys())}
    check_aggregate_keys(label, own, own_aggregate, present={s.split for s in samples}, case="the engine's scores")
    directions = engine.directions()
    undirected = [k for k in own.outputs() if not isinstance(directions.get(k), bool)]
    require(not undirected, label, f"the engine reports no direction for {undirected}")
    intervals = engine.intervals(scores, by_id)
    known = {k for m in engine.metrics for k in (*m.outputs(), *m.keys())}
    stray = [k for k in intervals if k.partition(".")[0] not in known]
    require(not stray, label, f"bootstrap intervals for keys that are not outputs: {stray}")
    for key, (low, high) in intervals.items():
        require(low <= high, label, f"bootstrap interval of {key} is ({low}, {high})")
    try:
        json.dumps(own.provenance())
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{label}: provenance() after load is not JSON: {exc}") from None


def check_metric(entry: str | type[Metric], root: Path | None = None, detector: str = DETECTOR) -> None:
    """Every check of the metric suite; the engine run needs a registered name (a class is checked without it)."""
    check_declaration(entry)
    check_unscorable_gives_none(entry, root)
    check_aggregate_shapes(entry)
    if isinstance(entry, str):
        check_in_engine(entry, root, detector)
