"""Bench integrity report, in the manner of VBench: check everything before scoring, list every
problem (never stop at the first), and say how bad each one is.

A bench FILE is read by the same reader the loader uses
(:func:`picbench.benches.jsonl.scan_bench_file`) and checked by the same record rules
(:data:`picbench.records.SAMPLE_RULES`), but into a sink that keeps every problem, so one damaged
line cannot hide the others. An in-memory bench (from a registered loader) goes through the same
rules via ``Sample.to_dict``. Images are decoded with :func:`picbench.imaging.load_rgb`:
grayscale, palette, RGBA, CMYK and EXIF-rotated files are normalized, not problems; missing,
truncated or corrupt files are errors.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from picbench.errors import ImageError, UnsafePathError
from picbench.imaging import load_rgb
from picbench.layouts import depth_rank_problem
from picbench.paths import resolve_in_root
from picbench.problems import Collect, Problem, ProblemSink, Severity
from picbench.records import Bench, check_samples, is_int, path_problem

__all__ = ["Problem", "Severity", "ValidationReport", "validate_bench", "validate_bench_file"]

LAYOUT_BENCH_PREFIX = "positionic"


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


def check_layout(obj: Mapping[str, Any], problems: ProblemSink, require_layout: bool) -> None:
    """The layout rules of a bench as a whole: a positioned bench (``positionic*``) needs a box
    and a depth rank 0..K-1 for every subject; elsewhere a half-boxed sample is a warning."""
    subjects = obj.get("subjects")
    subs = [s for s in subjects if isinstance(s, Mapping)] if isinstance(subjects, list) else []
    depths = [s.get("depth") for s in subs if is_int(s.get("depth"))]
    boxed = [s.get("box") is not None for s in subs]
    if require_layout:
        if not all(boxed) or len(depths) != len(subs):
            problems.error("missing-layout", "a positioned bench needs a box and a depth rank for every subject", "subjects")
        elif len(set(depths)) == len(depths) and (problem := depth_rank_problem(depths)) is not None:
            problems.error("bad-depth", problem, "subjects.depth")
    elif any(boxed) and not all(boxed):
        problems.warning("partial-layout", "some subjects have a box and others do not", "subjects")


def _image_uses(obj: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(field, path) for every image path a raw record names."""
    subjects = obj.get("subjects")
    for i, sub in enumerate(subjects if isinstance(subjects, list) else []):
        if not isinstance(sub, Mapping):
            continue
        for key in ("references", "eval_images"):
            paths = sub.get(key)
            for j, p in enumerate(paths if isinstance(paths, list) else []):
                if path_problem(p) is None:
                    yield f"subjects[{i}].{key}[{j}]", p
    target = obj.get("target")
    if path_problem(target) is None:
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


def _check_images(
    records: list[tuple[int | None, Any]],
    report: ValidationReport,
    sink: ProblemSink,
    data_root: Path,
    *,
    check_images: bool,
    require_layout: bool,
    workers: int | None = None,
) -> None:
    """Layout rules, path safety under ``data_root`` and (with ``check_images``) every image
    decoded once, each problem reported at the first sample using the image."""
    used: dict[Path, list[tuple[int | None, str, str, str]]] = {}
    resolved: dict[str, Path | UnsafePathError] = {}
    for line, obj in records:
        if not isinstance(obj, Mapping):
            continue
        sid = obj.get("id") if isinstance(obj.get("id"), str) else None
        here = sink.at(line=line, sample_id=sid)
        check_layout(obj, here, require_layout)
        for field_name, rel in _image_uses(obj):
            if rel not in resolved:
                try:
                    resolved[rel] = resolve_in_root(data_root, rel)
                except UnsafePathError as exc:
                    resolved[rel] = exc
            path = resolved[rel]
            if isinstance(path, UnsafePathError):
                here.error("unsafe-path", str(path), field_name)
                continue
            used.setdefault(path, []).append((line, sid or "?", field_name, rel))
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
        sink.at(line=line, sample_id=sid).error(code, f"{rel}: {reason} (used by {n} sample{'s' * (n != 1)})", field_name)


def validate_bench(
    bench: Bench, *, check_images: bool = True, require_layout: bool | None = None, workers: int | None = None
) -> ValidationReport:
    """Check an in-memory bench (from a loader) with the same rules as a file; ``workers``
    threads decode images (default: up to 4)."""
    if require_layout is None:
        require_layout = bench.name.startswith(LAYOUT_BENCH_PREFIX)
    sink = Collect()
    report = ValidationReport(bench.name, problems=sink.problems)
    records = list(check_samples(((None, s.to_dict()) for s in bench.samples), sink))
    _check_images(records, report, sink, Path(bench.data_root), check_images=check_images, require_layout=require_layout, workers=workers)
    return report


def validate_bench_file(
    path: str | Path, data_root: str | Path, *, check_images: bool = True, require_layout: bool | None = None, workers: int | None = None
) -> ValidationReport:
    """Check a bench JSONL file through the loader's reader, gathering every problem."""
    from picbench.benches.jsonl import scan_bench_file

    sink = Collect(file=str(path))
    report = ValidationReport(str(path), problems=sink.problems)
    header, records = scan_bench_file(path, sink)
    if header is not None and isinstance(header.get("name"), str) and header["name"]:
        report.bench = header["name"]
    if require_layout is None:
        require_layout = report.bench.startswith(LAYOUT_BENCH_PREFIX)
    _check_images(records, report, sink, Path(data_root), check_images=check_images, require_layout=require_layout, workers=workers)
    return report
