"""One item's Score from its features: every selected metric run under each identity set it is
computed under. A metric that raises or returns NaN or a non-number fails on that item (or subject)
only, recorded by name among the item's failures; the other metrics go on."""

from __future__ import annotations

from collections.abc import Mapping

from picbench.environment import environment_cause
from picbench.metrics.base import Unscorable, check_value
from picbench.metrics.decoding import ScoreItem
from picbench.metrics.features import ItemFeatures
from picbench.metrics.selection import MetricSelection
from picbench.records import Score, SubjectScore


def unscored(selection: MetricSelection, item: ScoreItem, reason: str, smoke: bool) -> Score:
    """The Score of an item without an image: every key None, ``reason`` its failure."""
    return Score(item.sample.id, item.seed, dict.fromkeys(selection.item_keys()), failures=(reason,), smoke=smoke)


def score_item(selection: MetricSelection, item: ItemFeatures, smoke: bool) -> Score:
    """Run every metric on the item's features, under each identity set for the metrics that
    score identity; a metric's exception or bad value is that metric's recorded failure, and the
    other metrics go on."""
    views, ref_problems = item.views, item.reference_problems
    features = views[selection.primary]
    sample, output = features.sample, features.detections
    failures: list[str] = []
    if output is not None:
        failures.extend(output.problems)
        if not output.detections and not output.failed:
            failures.append(f"detector found none of {sorted({s.class_word for s in sample.subjects})}")
    subject_values: list[dict[str, float | None]] = []
    subjects = []
    for s, sub in enumerate(sample.subjects):
        values: dict[str, float | None] = {}
        why = list(ref_problems.get(s, ()))
        for metric in selection.metrics:
            if not metric.per_subject:
                continue
            for identity in selection.sets_of(metric):
                key = selection.key(metric.name, identity)
                try:
                    values[key] = check_value(metric.name, key, metric.subject_value(views[identity], s))
                except Unscorable as exc:
                    values[key] = None
                    (why if not exc.failure else failures).append(
                        exc.reason if not exc.failure else f"metric {key}, subject {sub.name}: {exc.reason}"
                    )
                except Exception as exc:  # a metric's bug fails that metric on this subject only
                    if environment_cause(exc) is not None:
                        raise
                    values[key] = None
                    failures.append(f"metric {key} failed on subject {sub.name}: {type(exc).__name__}: {exc}")
        det_index, iou_value = features.matches.get(s, (None, None))
        det_box = output.detections[det_index].box if output is not None and det_index is not None else None
        subject_iou = iou_value if sub.box is not None and output is not None else None
        subject_values.append(values)
        subjects.append(SubjectScore(sub.name, values, det_box, subject_iou, "; ".join(dict.fromkeys(why)) or None))
    failures.extend(f"subject {sub.name}: {p}" for s, sub in enumerate(sample.subjects) for p in dict.fromkeys(ref_problems.get(s, ())))
    metrics: dict[str, float | None] = {}
    for metric in selection.metrics:
        for identity in selection.sets_of(metric):
            keys = {k: selection.key(k, identity) for k in metric.keys()}
            label = selection.key(metric.name, identity)
            subject_view = [
                {m.name: sv.get(selection.key(m.name, identity), sv.get(m.name)) for m in selection.metrics if m.per_subject}
                for sv in subject_values
            ]
            try:
                found = metric.item(views[identity], subject_view)
                if not isinstance(found, Mapping):
                    raise TypeError(f"metric {metric.name} returned {type(found).__name__}, not a mapping of its keys to values")
                metrics.update({keys[k]: check_value(metric.name, keys[k], found.get(k)) for k in keys})
            except Unscorable as exc:
                metrics.update(dict.fromkeys(keys.values()))
                failures.append(f"metric {label}: {exc.reason}")
            except Exception as exc:  # a plug-in that raises, returns NaN or a non-number fails for this item, by name
                if environment_cause(exc) is not None:
                    raise
                metrics.update(dict.fromkeys(keys.values()))
                failures.append(f"metric {label} failed: {type(exc).__name__}: {exc}")
    w, h = features.size
    detections = tuple(
        {"label": d.label, "score": d.score, "box": list(d.box), "box_norm": [d.box[0] / w, d.box[1] / h, d.box[2] / w, d.box[3] / h]}
        for d in (output.detections if output is not None else ())
    )
    return Score(
        sample.id,
        features.seed,
        metrics,
        tuple(subjects),
        output.raw if output is not None else None,
        detections,
        tuple(dict.fromkeys(failures)),
        smoke,
    )
