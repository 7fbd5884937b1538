"""The bench file format: JSONL with a header line (schema ``picbench/bench@1``) and one Sample
per line (schema ``picbench/sample@1``). Errors name the file and line. Training pair sets are the
same format with header ``kind: "pairs"`` and a ``target`` per sample (``picbench.pairs``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from picbench.atomic import atomic_write
from picbench.errors import BenchFormatError
from picbench.records import BENCH_SCHEMA, Bench, Sample, canonical_json


def read_json(path: Path) -> Any:
    """A whole JSON file (a loader's source list or spec); errors name the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchFormatError(f"cannot read: {exc.strerror}", file=path) from exc
    except json.JSONDecodeError as exc:
        raise BenchFormatError(f"malformed JSON: {exc.msg}", file=path, line=exc.lineno) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; malformed JSON names file and line."""
    path = Path(path)
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise BenchFormatError(f"cannot read: {exc.strerror}", file=path) from exc
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchFormatError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=path, line=lineno) from None
            if not isinstance(obj, dict):
                raise BenchFormatError(f"each line must be a JSON object, got {type(obj).__name__}", file=path, line=lineno)
            yield lineno, obj


def read_bench_jsonl(path: str | Path, data_root: str | Path) -> Bench:
    """Read a bench file. The header line is required; sample records are validated one by one."""
    path = Path(path)
    header: dict | None = None
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        if obj.get("schema") == BENCH_SCHEMA:
            if header is not None:
                raise BenchFormatError("a second bench header", file=path, line=lineno)
            header = obj
            continue
        if header is None:
            raise BenchFormatError(f"the first line must be a bench header with schema {BENCH_SCHEMA!r}", file=path, line=lineno)
        try:
            sample = Sample.from_dict(obj)
        except BenchFormatError as exc:
            raise BenchFormatError(exc.reason, file=path, line=lineno, sample_id=exc.sample_id or obj.get("id"), field=exc.field) from None
        if sample.id in seen:
            raise BenchFormatError(f"duplicate id (first at line {seen[sample.id]})", file=path, line=lineno, sample_id=sample.id, field="id")
        seen[sample.id] = lineno
        samples.append(sample)
    if header is None:
        raise BenchFormatError("empty bench file (no header)", file=path)
    for key in ("name", "version"):
        if not isinstance(header.get(key), str) or not header[key]:
            raise BenchFormatError(f"header lacks {key}", file=path, line=1, field=key)
    try:
        return Bench.from_header(header, samples, data_root)
    except BenchFormatError as exc:
        raise BenchFormatError(exc.reason, file=path, line=1, field=exc.field) from None


def write_bench_jsonl(bench: Bench, path: str | Path) -> Path:
    """Write atomically (temp file + rename) with canonical JSON, so the same bench gives the same bytes."""
    path = Path(path)
    with atomic_write(path) as fh:
        fh.write(canonical_json(bench.header()) + "\n")
        for s in bench.samples:
            fh.write(canonical_json(s.to_dict()) + "\n")
    return path
