"""Protocols: everything that changes a number for the same images, as one recorded object.

Papers in this field disagree on protocol (PositionIC's UNO row reads DINO 0.814, UNO's own paper
0.760, for the same method), so every number picbench writes carries the protocol that made it: a
name and a short hash of its content. A protocol's content is

- ``identity``: which images a generated image is compared with for identity: ``default`` (every
  eval image of the subject, DreamBooth's protocol) or ``references`` (only the references the
  method was given, as DreamBench++ compares);
- ``detector``: its registry name, weights hash and its own settings (how it is queried, its
  thresholds and image processor: whatever its ``provenance()`` reports), or None;
- ``encoders``: CLIP and DINO architecture, weights hash, preprocessing and activation (QuickGELU);
- ``precision``: ``fp32`` or ``bf16`` (autocast), the encoders' arithmetic;
- ``crops``: the crop rules of the box-crop metrics.

Each bench declares a default protocol (:data:`BENCH_PROTOCOLS`, its detector from
:func:`picbench.benches.default_detector`); a run records the protocol it
ran under (:func:`run_protocols`), and ``regress``, ``compare`` and ``leaderboard export`` refuse to
put numbers of different protocols side by side unless told to (:func:`differing_fields`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from picbench.benches import default_detector
from picbench.errors import PicbenchError

IDENTITY_SETS = {
    "default": "every eval image of the subject (DreamBooth's protocol)",
    "references": "only the reference images the method was given (DreamBench++'s protocol)",
}
"""What identity is scored against; ``--protocols`` names one or several (computed from the same features)."""
PRECISIONS = {"fp32": "float32 (DreamBooth's and DreamBench++'s protocols)", "bf16": "bfloat16 autocast (opt-in)"}
CROP_RULES = (
    "subject crop: the subject's target box, else its matched detection; pixel boxes rounded outwards, at least one "
    "pixel; occlusion_order: the overlap of two target boxes, at least 8 px a side"
)
HASH_CHARS = 12
UNKNOWN = "unknown"
_VOLATILE = frozenset({"folder", "device", "model_id", "detector", "batch_size"})
"""Provenance keys that name a place, a throughput setting or repeat another field: not part of a
protocol's content (the same weights in another folder, or run in larger batches, are the same protocol)."""


class ProtocolMismatchError(PicbenchError):
    """Numbers of two different (or unknown) protocols were asked to be compared or merged."""


@dataclass(frozen=True)
class DeclaredProtocol:
    """A named protocol as a bench declares it (the detector is the bench's own,
    :func:`picbench.benches.default_detector`); a run resolves it into a record (weights hashes,
    the models' own settings) with :func:`run_protocols`."""

    name: str
    summary: str
    detector: str | None
    identity: str = "default"
    precision: str = "fp32"
    crops: str = CROP_RULES
    clip: str = "open_clip ViT-B-32, OpenAI weights, QuickGELU"
    dino: str = "timm DINO ViT-S/16, resize 256 bicubic, center crop 224, ImageNet mean/std"

    def fields(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "detector": self.detector,
            "precision": self.precision,
            "clip": self.clip,
            "dino": self.dino,
            "crops": self.crops,
        }


PROTOCOLS: dict[str, DeclaredProtocol] = {
    p.name: p
    for p in (
        DeclaredProtocol(
            "dreambooth",
            "DreamBooth's protocol (DreamBench): CLIP-I and DINO against every real image of the subject, fp32",
            detector=default_detector("dreambench"),
        ),
        DeclaredProtocol(
            "positionic",
            "PositionIC-Bench as the paper scores it: identity as DreamBooth, IoU and AP via Vision-R1 queried as its own "
            "evaluation queries it (one query per category)",
            detector=default_detector("positionic"),
        ),
        DeclaredProtocol(
            "picbench", "picbench's default for any other bench: DreamBooth's identity protocol", detector=default_detector("")
        ),
    )
}
"""The named protocols ``picbench ls protocols`` lists."""

BENCH_PROTOCOLS = {
    "dreambench": "dreambooth",
    "dreambench-multi": "dreambooth",
    "msbench": "picbench",
    "positionic": "positionic",
    "positionic-open": "positionic",
}
"""Each bench's default protocol; a bench not listed (a JSONL file, a plug-in) gets ``picbench``."""


def bench_protocol(bench: str) -> DeclaredProtocol:
    """The protocol a bench declares (by bench name), with the bench's own default detector."""
    return replace(PROTOCOLS[BENCH_PROTOCOLS.get(bench, "picbench")], detector=default_detector(bench))


def parse_identity_sets(text: str | None) -> tuple[str, ...]:
    """``--protocols default,references`` -> ("default", "references"); the first is the run's
    primary protocol (the plain metric keys), the others add ``KEY@NAME`` keys."""
    if text is None:
        return ("default",)
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in IDENTITY_SETS]
    if not names or unknown:
        raise PicbenchError(f"--protocols takes a comma-separated list of {sorted(IDENTITY_SETS)}, got {text!r}")
    return names


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise PicbenchError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return precision


def metric_key(key: str, identity: str, primary: str) -> str:
    """The key of ``key`` (``clip_i``, ``clip_i.single``) under identity set ``identity``: unchanged
    for the primary set, else ``clip_i@references`` / ``clip_i@references.single``."""
    if identity == primary:
        return key
    base, dot, split = key.partition(".")
    return f"{base}@{identity}{dot}{split}"


def run_protocols(
    declared: DeclaredProtocol, identity_sets: Sequence[str], engine: Mapping[str, Any], detector: str | None
) -> list[dict[str, Any]]:
    """The record of each identity set a run computed (the first is the primary), from the metric
    engine's provenance: ``{"name", "hash", "fields"}``. The name is the declared protocol's with the
    identity set, and says where the run departed from the declaration (``+detector=owlv2``)."""
    encoders = {role: _content(prov) for role, prov in sorted((engine.get("encoders") or {}).items())}
    det = engine.get("detector")
    detector_fields = None
    if isinstance(det, Mapping):
        detector_fields = {
            "name": det.get("detector", detector),
            "weights_sha256": det.get("weights_sha256"),
            "query_mode": det.get("query_mode"),
            "settings": _content(det),
        }
    precision = str(engine.get("precision", "fp32"))
    departures = []
    if detector != declared.detector:
        departures.append(f"detector={detector or 'none'}")
    if precision != declared.precision:
        departures.append(f"precision={precision}")
    records = []
    for identity in identity_sets:
        fields = {"identity": identity, "detector": detector_fields, "encoders": encoders, "precision": precision, "crops": declared.crops}
        name = f"{declared.name}/{identity}" + (f"+{','.join(departures)}" if departures else "")
        records.append({"name": name, "hash": content_hash(fields), "fields": fields})
    return records


def content_hash(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:HASH_CHARS]


def label(record: Mapping[str, Any] | None) -> str:
    """``dreambooth/default #1a2b3c4d5e6f``, or ``unknown`` for results that record no protocol."""
    if not record:
        return UNKNOWN
    return f"{record.get('name', '?')} #{record.get('hash', '?')}"


def differing_fields(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> list[str]:
    """Dotted names of the fields where two protocol records differ (``detector.name``,
    ``encoders.clip.weights_sha256``); ``["protocol"]`` where either is unknown. Empty: the same."""
    if not a or not b:
        return ["protocol"]
    if a.get("hash") == b.get("hash") and a.get("fields") == b.get("fields"):
        return []
    flat_a, flat_b = _flatten(a.get("fields") or {}), _flatten(b.get("fields") or {})
    found = sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k, _ABSENT) != flat_b.get(k, _ABSENT))
    return found or ["hash"]


def mismatch_message(what_a: str, a: Mapping[str, Any] | None, what_b: str, b: Mapping[str, Any] | None, fields: Sequence[str]) -> str:
    """One sentence naming both protocols and the fields that differ."""
    shown = ", ".join(fields[:12]) + (f" and {len(fields) - 12} more" if len(fields) > 12 else "")
    unknown = not a or not b
    why = (
        "results without a protocol (written before picbench recorded protocols, or a paper's reported numbers) cannot be vouched for"
        if unknown
        else f"they differ in {shown}"
    )
    return (
        f"{what_a} was scored under protocol {label(a)} and {what_b} under {label(b)}: {why}; numbers of different protocols "
        "are not compared (pass --allow-protocol-mismatch to compare them anyway, labelled)"
    )


def parse_record(value: Any, *, where: str = "") -> dict[str, Any] | None:
    """A protocol record read back from a results file or a CSV cell (None: unknown); a malformed
    one raises, its message starting with ``where``."""
    if value is None or value == "":
        return None
    prefix = f"{where}: " if where else ""
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str) or not isinstance(value.get("hash"), str):
        raise PicbenchError(f"{prefix}a protocol must be an object with a string name and hash, got {str(value)[:200]!r}")
    if not isinstance(value.get("fields", {}), Mapping):
        raise PicbenchError(f"{prefix}protocol fields must be an object, got {type(value.get('fields')).__name__}")
    return {"name": value["name"], "hash": value["hash"], "fields": dict(value.get("fields") or {})}


_ABSENT = object()


def _content(provenance: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in provenance.items() if k not in _VOLATILE}


_FLATTEN_DEPTH = 16
"""Fields nested deeper than this are compared whole (a hostile file cannot exhaust the stack)."""


def _flatten(value: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    if isinstance(value, Mapping) and (value or not prefix) and depth < _FLATTEN_DEPTH:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k), depth + 1))
        return out
    try:
        return {prefix: json.dumps(value, sort_keys=True, default=str)}
    except (RecursionError, ValueError):
        return {prefix: repr(value)[:10000]}


def spread(
    metrics: Mapping[str, float | None], protocol: Mapping[str, Any] | None, extra: Sequence[Mapping[str, Any]]
) -> list[tuple[str, dict[str, float | None], float | None]]:
    """How much the protocol choice moves each metric of one run: (metric key, identity set ->
    value, max - min) for every key the run computed under more than one identity set."""
    if not protocol or not extra:
        return []
    primary = str(protocol.get("fields", {}).get("identity", "default"))
    sets = [primary] + [str(p.get("fields", {}).get("identity", "")) for p in extra]
    rows = []
    for key, value in metrics.items():
        if "@" in key:
            continue
        values = {primary: value, **{s: metrics[metric_key(key, s, primary)] for s in sets[1:] if metric_key(key, s, primary) in metrics}}
        if len(values) < 2:
            continue
        known = [v for v in values.values() if v is not None]
        rows.append((key, values, max(known) - min(known) if len(known) == len(values) else None))
    return rows
