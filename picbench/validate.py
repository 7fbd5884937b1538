"""Bench integrity report, in the manner of VBench: check everything before scoring, list every
problem (never stop at the first), and say how bad each one is.

A bench FILE is checked line by line from its raw text (malformed JSON, unknown fields, bad
boxes, ... each become a problem and checking goes on with the next line), so one damaged line
cannot hide the others. An in-memory bench (from a registered loader) goes through the same
record checks via ``Sample.to_dict``. Images are decoded with :func:`picbench.imaging.load_rgb`:
grayscale, palette, RGBA, CMYK and EXIF-rotated files are normalized, not problems; missing,
truncated or corrupt files are errors.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from picbench.errors import BenchFormatError, ImageError, PicbenchError, UnsafePathError
from picbench.imaging import load_rgb
from picbench.paths import resolve_in_root
from picbench.records import (
    BENCH_SCHEMA,
    SAMPLE_FIELDS,
    SAMPLE_SCHEMA,
    SUBJECT_FIELDS,
    Bench,
    Sample,
    check_box,
)

Severity = Literal["error", "warning"]

_HEADER_FIELDS = {"schema", "name", "version", "description", "reconstruction", "kind"}
LAYOUT_BENCH_PREFIX = "positionic"


@dataclass(frozen=True)
class Problem:
    """One finding: a stable ``code`` (e.g. ``missing-image``) and where it is."""

    severity: Severity
    code: str
    message: str
    file: str | None = None
    line: int | None = None
    sample_id: str | None = None
    field: str | None = None

    def where(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file + (f":{self.line}" if self.line is not None else ""))
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.sample_id:
            parts.append(f"sample {self.sample_id!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        return ", ".join(parts)


@dataclass
class ValidationReport:
    bench: str
    n_samples: int = 0
    n_images: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> Counter[str]:
        return Counter(p.code for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "samples": self.n_samples,
            "images": self.n_images,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [asdict(p) for p in self.problems],
        }


class _Collector:
    """Problems of one record, stamped with the file, line and sample they belong to."""

    def __init__(self, report: ValidationReport, file: str | None, line: int | None, sample_id: str | None) -> None:
        self.report, self.file, self.line, self.sample_id = report, file, line, sample_id
        self.n_errors = 0

    def add(self, code: str, message: str, field_name: str | None = None, severity: Severity = "error") -> None:
        self.n_errors += severity == "error"
        self.report.problems.append(Problem(severity, code, message, self.file, self.line, self.sample_id, field_name))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_subject(sub: Any, where: str, out: _Collector) -> None:
    if not isinstance(sub, Mapping):
        out.add("bad-subject", f"subject must be an object, got {type(sub).__name__}", where)
        return
    for key in sorted(set(sub) - SUBJECT_FIELDS):
        out.add("unknown-field", f"unknown field {key!r}", f"{where}.{key}")
    for key in ("name", "class_word"):
        if not isinstance(sub.get(key), str) or not sub[key].strip():
            out.add("missing-field", f"missing or empty {key}", f"{where}.{key}")
    refs = sub.get("references")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r for r in refs):
        out.add("bad-paths", "references must be a non-empty list of paths", f"{where}.references")
    evals = sub.get("eval_images")
    if evals is not None and (not isinstance(evals, list) or not all(isinstance(r, str) and r for r in evals)):
        out.add("bad-paths", "eval_images must be a list of paths", f"{where}.eval_images")
    if sub.get("box") is not None:
        try:
            check_box(sub["box"])
        except BenchFormatError as exc:
            out.add("bad-box", exc.reason, f"{where}.box")
    depth = sub.get("depth")
    if depth is not None and (not _is_int(depth) or depth < 0):
        out.add("bad-depth", f"depth must be a non-negative integer, got {depth!r}", f"{where}.depth")


def _check_record(obj: Mapping[str, Any], out: _Collector, require_layout: bool) -> None:
    """Every structural problem of one sample record (the checks of ``Sample.from_dict``, but all
    of them), plus the layout rules when the bench is a positioned one."""
    schema = obj.get("schema", SAMPLE_SCHEMA)
    if schema != SAMPLE_SCHEMA:
        out.add("bad-schema", f"unsupported schema {schema!r} (expected {SAMPLE_SCHEMA})", "schema")
    for key in sorted(set(obj) - SAMPLE_FIELDS):
        out.add("unknown-field", f"unknown field {key!r}", key)
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        out.add("missing-field", "missing or empty id", "id")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        out.add("empty-prompt", "missing or empty prompt", "prompt")
    for key in ("width", "height"):
        if not _is_int(obj.get(key)) or obj[key] <= 0:
            out.add("bad-size", f"{key} must be a positive integer, got {obj.get(key)!r}", key)
    split = obj.get("split")
    if split not in ("single", "multi"):
        out.add("bad-split", f"split must be 'single' or 'multi', got {split!r}", "split")
    if obj.get("meta") is not None and not isinstance(obj["meta"], Mapping):
        out.add("bad-meta", "meta must be an object", "meta")
    subjects = obj.get("subjects")
    if not isinstance(subjects, list) or not subjects:
        out.add("bad-subjects", "subjects must be a non-empty list", "subjects")
        return
    for i, sub in enumerate(subjects):
        _check_subject(sub, f"subjects[{i}]", out)
    if split == "single" and len(subjects) != 1:
        out.add("bad-subjects", f"split 'single' needs exactly one subject, got {len(subjects)}", "subjects")
    if split == "multi" and len(subjects) < 2:
        out.add("bad-subjects", "split 'multi' needs at least two subjects", "subjects")
    subs = [s for s in subjects if isinstance(s, Mapping)]
    depths = [s.get("depth") for s in subs if _is_int(s.get("depth"))]
    if len(depths) != len(set(depths)):
        out.add("bad-depth", f"depth ranks repeat: {depths}", "subjects.depth")
    boxed = [s.get("box") is not None for s in subs]
    if require_layout:
        if not all(boxed) or len(depths) != len(subs):
            out.add("missing-layout", "a positioned bench needs a box and a depth rank for every subject", "subjects")
        elif sorted(depths) != list(range(len(depths))):
            out.add("bad-depth", f"depth ranks must be 0..{len(depths) - 1}, got {sorted(depths)}", "subjects.depth")
    elif any(boxed) and not all(boxed):
        out.add("partial-layout", "some subjects have a box and others do not", "subjects", severity="warning")


def _image_uses(obj: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(field, path) for every image path a raw record names."""
    subjects = obj.get("subjects")
    for i, sub in enumerate(subjects if isinstance(subjects, list) else []):
        if not isinstance(sub, Mapping):
            continue
        for key in ("references", "eval_images"):
            paths = sub.get(key)
            for j, p in enumerate(paths if isinstance(paths, list) else []):
                if isinstance(p, str) and p:
                    yield f"subjects[{i}].{key}[{j}]", p
    target = obj.get("target")
    if isinstance(target, str) and target:
        yield "target", target


_decoded: dict[tuple[str, int, int], str | None] = {}


def clear_image_cache() -> None:
    """Forget which images decoded (for timing a cold validation)."""
    _decoded.clear()


def image_problem(path: Path) -> str | None:
    """Why an image cannot be used (missing, truncated, corrupt), or None. Cached per file
    version, since every bench on a data root shares its images."""
    try:
        stat = path.stat()
    except OSError:
        return f"image {path} does not exist"
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _decoded:
        try:
            load_rgb(path)
            _decoded[key] = None
        except ImageError as exc:
            _decoded[key] = str(exc)
    return _decoded[key]


def _check_records(
    records: list[tuple[int | None, dict[str, Any]]],
    report: ValidationReport,
    data_root: Path,
    *,
    file: str | None,
    check_images: bool,
    require_layout: bool,
    workers: int | None = None,
) -> None:
    seen: dict[str, int | None] = {}
    used: dict[Path, list[tuple[int | None, str, str, str]]] = {}
    resolved: dict[str, Path | UnsafePathError] = {}
    for line, obj in records:
        sid = obj.get("id") if isinstance(obj.get("id"), str) else None
        out = _Collector(report, file, line, sid)
        _check_record(obj, out, require_layout)
        if sid:
            if sid in seen:
                first = f"line {seen[sid]}" if seen[sid] is not None else "an earlier sample"
                out.add("duplicate-id", f"id {sid!r} already used at {first}", "id")
            else:
                seen[sid] = line
        for field_name, rel in _image_uses(obj):
            if rel not in resolved:
                try:
                    resolved[rel] = resolve_in_root(data_root, rel)
                except UnsafePathError as exc:
                    resolved[rel] = exc
            path = resolved[rel]
            if isinstance(path, UnsafePathError):
                out.add("unsafe-path", str(path), field_name)
                continue
            used.setdefault(path, []).append((line, sid or "?", field_name, rel))
        if out.n_errors == 0:
            try:
                Sample.from_dict(obj)
            except BenchFormatError as exc:  # a rule the checks above do not cover yet
                out.add("invalid-sample", exc.reason, exc.field)
    report.n_samples = len(records)
    report.n_images = len(used)
    if not check_images:
        return
    paths = sorted(used)
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        reasons = list(pool.map(image_problem, paths))
    for path, reason in zip(paths, reasons):
        if reason is None:
            continue
        uses = used[path]
        line, sid, field_name, rel = uses[0]
        code = "missing-image" if not path.exists() else "corrupt-image"
        n = len({u[1] for u in uses})
        _Collector(report, file, line, sid).add(code, f"{rel}: {reason} (used by {n} sample{'s' * (n != 1)})", field_name)


def validate_bench(bench: Bench, *, check_images: bool = True, require_layout: bool | None = None, workers: int | None = None) -> ValidationReport:
    """Check an in-memory bench (from a loader) with the same rules as a file; ``workers``
    threads decode images (default: up to 4)."""
    if require_layout is None:
        require_layout = bench.name.startswith(LAYOUT_BENCH_PREFIX)
    report = ValidationReport(bench.name)
    records = [(None, s.to_dict()) for s in bench.samples]
    _check_records(records, report, Path(bench.data_root), file=None, check_images=check_images, require_layout=require_layout, workers=workers)
    return report


def validate_bench_file(
    path: str | Path, data_root: str | Path, *, check_images: bool = True, require_layout: bool | None = None, workers: int | None = None
) -> ValidationReport:
    """Check a bench JSONL file line by line; each problem is recorded and checking goes on."""
    path = Path(path)
    report = ValidationReport(str(path))
    file = str(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        report.problems.append(Problem("error", "unreadable-file", f"cannot read: {exc}", file))
        return report
    header: dict[str, Any] | None = None
    records: list[tuple[int | None, dict[str, Any]]] = []
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        out = _Collector(report, file, lineno, None)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            out.add("malformed-json", f"malformed JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            out.add("malformed-json", f"each line must be a JSON object, got {type(obj).__name__}")
            continue
        if obj.get("schema") == BENCH_SCHEMA:
            if header is not None or records:
                out.add("bad-header", "a bench header must be the first line, and only once")
                continue
            header = obj
            for key in ("name", "version"):
                if not isinstance(obj.get(key), str) or not obj[key]:
                    out.add("bad-header", f"header lacks {key}", key)
            for key in sorted(set(obj) - _HEADER_FIELDS):
                out.add("unknown-field", f"unknown header field {key!r}", key, severity="warning")
            continue
        if header is None and not records:
            out.add("bad-header", f"the first line must be a bench header with schema {BENCH_SCHEMA!r}")
        records.append((lineno, obj))
    if header is not None and isinstance(header.get("name"), str):
        report.bench = header["name"]
    if require_layout is None:
        require_layout = report.bench.startswith(LAYOUT_BENCH_PREFIX)
    _check_records(records, report, Path(data_root), file=file, check_images=check_images, require_layout=require_layout, workers=workers)
    if not records and header is not None:
        report.problems.append(Problem("warning", "empty-bench", "the bench has no samples", file))
    return report


def validate_named(name: str, data_dir: str | Path | None = None, *, check_images: bool = True) -> ValidationReport:
    """Validate a registered bench, a built bench or a .jsonl path. Files are checked raw; a
    loader's warnings become warnings of the report and its failure an error, never a crash."""
    from picbench.benches import BENCHES, built_benches, load_bench
    from picbench.paths import find_data_dir

    root = find_data_dir(data_dir)
    assert root is not None
    built = built_benches()
    if name.endswith(".jsonl"):
        return validate_bench_file(name, root, check_images=check_images)
    if name in built and name not in BENCHES:
        return validate_bench_file(built[name], root, check_images=check_images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            bench = load_bench(name, root)
        except PicbenchError as exc:
            report = ValidationReport(name)
            report.problems.append(Problem("error", "load-failed", str(exc)))
            return report
    report = validate_bench(bench, check_images=check_images)
    report.problems[:0] = [Problem("warning", "loader-warning", str(w.message)) for w in caught]
    return report
