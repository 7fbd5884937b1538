"""The training log (``OUT/train_log.jsonl``, one JSON record per optimizer step), read one way by
the trainer (on resume) and by ``picbench report``: every line an object with a non-negative
integer ``step`` and, where present, an ``eval`` table; a damaged line is an error naming the file
and line, except a torn last line (what a kill during the append leaves), which is dropped and
returned so the caller can say so."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from picbench.errors import PicbenchError

TRAIN_LOG = "train_log.jsonl"
MAX_STEP = 2**53
"""Steps beyond this are damage (no float can tell them apart)."""


def read_training_log(file: str | Path) -> tuple[list[dict[str, Any]], str]:
    """(records, torn last line or ""); raises :class:`PicbenchError` naming file and line."""
    file = Path(file)
    try:
        text = file.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise PicbenchError(f"cannot read {file}: {exc.strerror or exc}") from None
    numbered = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    records: list[dict[str, Any]] = []
    for i, (n, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            if i == len(numbered) - 1:
                return records, line
            raise PicbenchError(f"{file}:{n}: not a JSON record ({exc}); only a torn last line is dropped on its own") from None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_STEP:
            raise PicbenchError(f"{file}:{n}: field 'step' is missing or not an integer in [0, 2**53]")
        if not isinstance(record.get("eval") or {}, dict):
            raise PicbenchError(f"{file}:{n}: field 'eval' must be a table of scores")
        records.append(record)
    return records, ""


def finite(value: Any) -> float | None:
    """A logged number as a float, or None for anything that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
