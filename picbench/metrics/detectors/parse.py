"""Vision-R1 answers, parsed as Vision-R1's own localization evaluation parses them, without ``eval``.

Source: jefferyZhan/Griffon @ 9866875e7d18e705239f3e03115a55aef30ab635, ``Vision-R1/eval/eval_localization.py``
(Qwen2.5-VL branch, lines 1066-1092):

1. :func:`strip_json_fence` (``parse_json``, lines 226-234): from the first line that is exactly
   ```` ```json ````, the text up to the next ```` ``` ````; otherwise the whole answer.
2. :func:`answer_literal` (lines 1070-1075): ``ast.literal_eval`` of that text, so Python literals
   with single quotes are accepted as well as JSON; if it fails, the text up to and including the
   last ``"}`` with ``]`` appended (a list cut off mid-way keeps its complete entries) is evaluated
   instead; if that fails too, the answer gives nothing (here: :class:`AnswerFormatError`).
3. :func:`parse_answer` (lines 1076-1092): every entry of the value that has a ``bbox_2d`` of four
   numbers and a string ``label`` is a box (label lower-cased, as ``catname2id[item["label"].lower()]``
   looks it up); any other entry is skipped (here: skipped with the reason in ``problems``).

``ast.literal_eval`` builds literals only (strings, numbers, tuples, lists, dicts, sets, booleans,
None): it never calls or imports anything.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

FENCE_OPEN = "```json"
FENCE = "```"
RECOVERY_END = '"}'
_LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)


class AnswerFormatError(ValueError):
    """The answer holds no literal the evaluation can read: it contributes no boxes."""


@dataclass(frozen=True)
class ParsedBox:
    box: tuple[float, float, float, float]  # in the answer's own pixel space
    label: str


@dataclass(frozen=True)
class ParsedAnswer:
    boxes: tuple[ParsedBox, ...]
    problems: tuple[str, ...]  # entries skipped, truncation: recorded, not fatal


def strip_json_fence(text: str) -> str:
    """``parse_json`` (eval_localization.py:226-234): the body of the first ```` ```json ```` fence."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line == FENCE_OPEN:
            return "\n".join(lines[i + 1 :]).split(FENCE)[0]
    return text


def _literal(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except _LITERAL_ERRORS as exc:
        raise AnswerFormatError(f"{type(exc).__name__}: {exc}") from None


def answer_literal(text: str) -> tuple[object, bool]:
    """(value, recovered): the literal the evaluation reads from the fence-stripped ``text``
    (eval_localization.py:1070-1075), and whether its cut-off recovery was needed."""
    try:
        return _literal(text), False
    except AnswerFormatError as first:
        end = text.rfind(RECOVERY_END) + len(RECOVERY_END)
        try:
            return _literal(text[:end] + "]"), True
        except AnswerFormatError:
            raise AnswerFormatError(f"not a Python or JSON literal ({first}), nor one cut off after a complete entry") from None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _box(raw: object) -> tuple[float, float, float, float] | str:
    """Four numbers (numpy's reading of ``item["bbox_2d"]`` in ``xyxy2xywh``, so one list nested in
    another is the same box); anything else is why the entry is skipped."""
    if isinstance(raw, (list, tuple)) and len(raw) == 1 and isinstance(raw[0], (list, tuple)):
        raw = raw[0]
    if not isinstance(raw, (list, tuple)) or len(raw) != 4:
        return f"bbox_2d must be 4 numbers, got {str(raw)[:80]}"
    values = [_number(v) for v in raw]
    if any(v is None for v in values):
        return f"bbox_2d has a non-numeric value: {str(raw)[:80]}"
    if not all(math.isfinite(v) for v in values):  # type: ignore[arg-type]
        return f"bbox_2d has an infinite value: {str(raw)[:80]}"
    return tuple(values)  # type: ignore[return-value]


def _entries(value: object) -> Iterable[object]:
    """What the evaluation's ``for item in extracted`` walks (a dict: its keys; a number: nothing to walk)."""
    if isinstance(value, (str, bytes, Sequence, Mapping, set, frozenset)):
        return list(value)  # type: ignore[arg-type]
    raise AnswerFormatError(f"the answer's literal is a {type(value).__name__}, not a list of boxes")


def parse_answer(text: str | None) -> ParsedAnswer:
    if text is None or not text.strip():
        raise AnswerFormatError("empty answer")
    value, recovered = answer_literal(strip_json_fence(text))
    entries = _entries(value)
    problems: list[str] = []
    if recovered:
        problems.append(f"answer cut off: kept {len(entries)} complete entr{'y' if len(entries) == 1 else 'ies'}")  # type: ignore[arg-type]
    boxes: list[ParsedBox] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            problems.append(f"entry {i} is not an object: {str(entry)[:80]}")
            continue
        if "bbox_2d" not in entry:
            problems.append(f"entry {i} has no bbox_2d: {str(entry)[:80]}")
            continue
        box = _box(entry["bbox_2d"])
        if isinstance(box, str):
            problems.append(f"entry {i}: {box}")
            continue
        label = entry.get("label")
        if not isinstance(label, str):
            problems.append(f"entry {i} has no string label: {str(entry)[:80]}")
            continue
        boxes.append(ParsedBox(box, label.lower()))
    return ParsedAnswer(tuple(boxes), tuple(problems))
