"""Parse a VLM detector's answer (Vision-R1 / Qwen2.5-VL grounding format) without ``eval``.

Expected: a (usually fenced) JSON list of ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}``.
Accepted as well: bare JSON, text before or after it, a single object instead of a list, and a
list cut off mid-way (the complete entries are recovered and the cut is reported). Anything else
raises :class:`AnswerFormatError`, which the engine records as the sample's detection failure.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|\Z)", re.S)
_DECODER = json.JSONDecoder()
BOX_KEYS = ("bbox_2d", "bbox", "box")


class AnswerFormatError(ValueError):
    """The answer holds no usable JSON list of boxes."""


@dataclass(frozen=True)
class ParsedBox:
    box: tuple[float, float, float, float]  # in the answer's own pixel space
    label: str


@dataclass(frozen=True)
class ParsedAnswer:
    boxes: tuple[ParsedBox, ...]
    problems: tuple[str, ...]  # entries skipped, truncation: recorded, not fatal


def _candidates(text: str) -> list[str]:
    """Where the JSON may be: fenced blocks first, then the whole answer."""
    fenced = [m.group(1) for m in _FENCE.finditer(text) if m.group(1).strip()]
    return fenced + [text]


def _find_json(text: str) -> tuple[object, bool] | None:
    """The first JSON list or object in ``text`` (trailing text ignored), as (value, truncated).
    A list that does not decode is taken to be cut off: its complete leading objects are kept."""
    for i, ch in enumerate(text):
        if ch not in "[{":
            continue
        try:
            value, _ = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            recovered = _recover_truncated(text, i) if ch == "[" else []
            if recovered:
                return recovered, True
            continue
        if isinstance(value, dict) or (isinstance(value, list) and (not value or any(isinstance(v, dict) for v in value))):
            return value, False
    return None


def _recover_truncated(text: str, start: int) -> list[object]:
    """Decode object after object from the list opened at ``start`` until one fails."""
    items: list[object] = []
    pos = start + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] != "{":
            return items
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            return items
        items.append(value)


def _entries(value: object) -> list[object]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if any(k in value for k in BOX_KEYS):
            return [value]
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:  # {"objects": [...]}
            return lists[0]
    raise AnswerFormatError(f"expected a JSON list of boxes, got {type(value).__name__}")


def _box(entry: dict) -> tuple[float, float, float, float] | str:
    raw = next((entry[k] for k in BOX_KEYS if k in entry), None)
    if raw is None:
        return f"no bbox_2d in {json.dumps(entry)[:80]}"
    if not isinstance(raw, list) or len(raw) != 4:
        return f"bbox_2d must be 4 numbers, got {json.dumps(raw)[:80]}"
    try:
        values = tuple(float(v) for v in raw)
    except (TypeError, ValueError):
        return f"bbox_2d has a non-numeric value: {json.dumps(raw)[:80]}"
    if isinstance(raw[0], bool) or not all(math.isfinite(v) for v in values):
        return f"bbox_2d has an invalid value: {json.dumps(raw)[:80]}"
    return values  # type: ignore[return-value]


def parse_answer(text: str | None) -> ParsedAnswer:
    if text is None or not text.strip():
        raise AnswerFormatError("empty answer")
    problems: list[str] = []
    found = next((f for f in map(_find_json, _candidates(text)) if f is not None), None)
    if found is None:
        raise AnswerFormatError(f"no JSON list of boxes in the answer: {text.strip()[:120]!r}")
    value, truncated = found
    if truncated:
        n = len(value)  # type: ignore[arg-type]
        problems.append(f"answer cut off: kept {n} complete entr{'y' if n == 1 else 'ies'}")
    boxes: list[ParsedBox] = []
    for i, entry in enumerate(_entries(value)):
        if not isinstance(entry, dict):
            problems.append(f"entry {i} is not an object: {json.dumps(entry)[:80]}")
            continue
        box = _box(entry)
        if isinstance(box, str):
            problems.append(f"entry {i}: {box}")
            continue
        label = entry.get("label", "")
        if not isinstance(label, str) or not label.strip():
            problems.append(f"entry {i} has no label")
            label = ""
        boxes.append(ParsedBox(box, label.strip()))
    return ParsedAnswer(tuple(boxes), tuple(problems))
