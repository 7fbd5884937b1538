"""The bench file format: JSONL with a header line (schema ``picbench/bench@1``) and one Sample
per line (schema ``picbench/sample@1``). Errors name the file and line. Training pair sets are the
same format with header ``kind: "pairs"`` and a ``target`` per sample (``picbench.pairs``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from picbench.atomic import atomic_write
from picbench.errors import BenchFormatError
from picbench.problems import ProblemSink, RaiseFirst
from picbench.records import (
    BENCH_SCHEMA,
    Bench,
    Sample,
    canonical_json,
    check_header_record,
    check_samples,
)


def read_json(path: Path) -> Any:
    """A whole JSON file (a loader's source list or spec); errors name the file and line."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise BenchFormatError(f"cannot read: {exc.strerror}", file=path) from exc
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise BenchFormatError(f"invalid UTF-8 at byte {exc.start}", file=path, line=line) from None
    problem, obj = _parse_json(text)
    if problem is not None:
        raise BenchFormatError(problem[1], file=path, line=problem[0])
    return obj


def _parse_json(text: str) -> tuple[tuple[int | None, str] | None, Any]:
    """(None, value), or ((line within ``text``, why), None) for whatever json.loads refuses:
    malformed JSON, nesting deep enough to exhaust the recursion limit, an integer of more
    digits than Python converts (4300)."""
    try:
        return None, json.loads(text)
    except json.JSONDecodeError as exc:
        return (exc.lineno, f"malformed JSON: {exc.msg} (column {exc.colno})"), None
    except RecursionError:
        return (None, "malformed JSON: nested too deeply"), None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        return (None, f"malformed JSON: {exc}"), None


def iter_json_lines(path: str | Path, problems: ProblemSink) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file. Lines are split on
    ``\n`` only (U+2028, U+0085 or a form feed inside a JSON string do not end a line), each
    line is decoded on its own, and an unreadable file, invalid UTF-8, malformed JSON or a
    line that is not an object is reported with its line and skipped."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.error("unreadable-file", f"cannot read: {exc.strerror or exc}")
        return
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        here = problems.at(line=lineno)
        try:
            text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            here.error("bad-encoding", f"invalid UTF-8 at byte {exc.start} of the line")
            continue
        problem, obj = _parse_json(text)
        if problem is not None:
            here.error("malformed-json", problem[1])
            continue
        if not isinstance(obj, dict):
            here.error("malformed-json", f"each line must be a JSON object, got {type(obj).__name__}")
            continue
        yield lineno, obj


def scan_bench_file(path: str | Path, problems: ProblemSink) -> tuple[dict[str, Any] | None, list[tuple[int, dict[str, Any]]]]:
    """The one reader of bench (and pair-set) files, for ``picbench validate`` and for loading
    alike: the header and every sample record, with every rule's problem reported into
    ``problems`` at its line. Records that broke a rule are returned too (validate still checks
    their images); a :class:`~picbench.problems.RaiseFirst` sink stops at the first error."""
    header: dict[str, Any] | None = None

    def sample_lines() -> Iterator[tuple[int, dict[str, Any]]]:
        nonlocal header
        first = True
        for lineno, obj in iter_json_lines(path, problems):
            here = problems.at(line=lineno)
            if obj.get("schema") == BENCH_SCHEMA:
                if not first:
                    here.error("bad-header", "a bench header must be the first line, and only once")
                else:
                    header = obj
                    check_header_record(obj, here)
                first = False
                continue
            if first:
                here.error("bad-header", f"the first line must be a bench header with schema {BENCH_SCHEMA!r}")
            first = False
            yield lineno, obj

    records = list(check_samples(sample_lines(), problems))
    if header is None and not records and problems.n_errors == 0:
        problems.error("empty-bench", "the file holds no bench header and no samples")
    elif header is not None and not records:
        problems.error("empty-bench", "the bench has a header but no samples")
    return header, records


def read_bench_jsonl(path: str | Path, data_root: str | Path) -> Bench:
    """Read a bench (or pair-set) file; the first broken rule raises, naming the file and line."""
    path = Path(path)
    header, records = scan_bench_file(path, RaiseFirst(file=path))
    assert header is not None  # scan_bench_file raised otherwise
    samples = [Sample.from_dict(obj, file=path, line=lineno) for lineno, obj in records]
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
