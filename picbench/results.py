"""The result of one run, in the manner of lm-evaluation-harness: one JSON per run with aggregate
metrics, counts and provenance, beside a per-sample JSONL of Score records.

Layout of a run folder::

    OUT/results.json      RunResult (this module)
    OUT/samples.jsonl     one Score.to_dict() per (sample, seed), plus "image" (path relative to OUT)
    OUT/images/...        generated images
    OUT/store.sqlite      the resumable store
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from picbench.atomic import atomic_write
from picbench.coverage import Coverage
from picbench.errors import PicbenchError, ResultFormatError
from picbench.limits import SEED_LIMIT
from picbench.protocols import parse_record
from picbench.records import Score

RESULTS_SCHEMA = "picbench/results@1"
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"


@dataclass(frozen=True)
class RunResult:
    """Aggregate outcome of ``picbench run``. ``metrics`` keys follow the metric engine's names
    (clip_i, clip_t, dino, iou, ap, ... with ``.single``/``.multi`` split suffixes); ``smoke``
    marks runs with random-weight models, whose numbers mean nothing."""

    method: str
    method_version: str
    method_params: Mapping[str, Any]
    bench: str
    bench_version: str
    bench_hash: str
    seeds: tuple[int, ...]
    metrics: Mapping[str, float | None]
    counts: Mapping[str, int]
    smoke: bool
    provenance: Mapping[str, Any] = field(default_factory=dict)
    source: str = "measured"  # or "reported" for numbers copied from a paper
    higher_is_better: Mapping[str, bool] = field(default_factory=dict)  # base metric key -> direction; absent = higher is better
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # metric key -> bootstrap 95% interval
    coverage: Coverage | None = None  # None: unknown (a results file written before coverage was recorded)

    @property
    def partial(self) -> bool:
        """True when the aggregates cover fewer items than the run was asked for."""
        return self.coverage is not None and self.coverage.partial

    protocol: Mapping[str, Any] | None = None  # {"name", "hash", "fields"} of the plain metric keys; None: unknown (older results)
    extra_protocols: tuple[Mapping[str, Any], ...] = ()  # the other identity sets of the run, whose keys read KEY@SET

    def better_high(self, key: str) -> bool:
        """The direction of a metric key (``clip_i.multi`` follows ``clip_i``)."""
        return bool(self.higher_is_better.get(key, self.higher_is_better.get(key.split(".", 1)[0], True)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = RESULTS_SCHEMA
        d["seeds"] = list(self.seeds)
        d["intervals"] = {k: list(v) for k, v in self.intervals.items()}
        d["coverage"] = self.coverage.to_dict() if self.coverage is not None else None
        d["extra_protocols"] = [dict(p) for p in self.extra_protocols]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, file: str | Path | None = None) -> RunResult:
        """A results record read back; a field of the wrong type raises :class:`ResultFormatError`
        naming the file and field (a results file is input too: it may be old, edited or hostile)."""

        def bad(field_name: str | None, why: str) -> ResultFormatError:
            return ResultFormatError(why, file=file or "results", field=field_name)

        if not isinstance(d, Mapping):
            raise bad(None, f"a results file must hold a JSON object, got {type(d).__name__}")
        if d.get("schema") != RESULTS_SCHEMA:
            raise bad("schema", f"schema {d.get('schema')!r} is not {RESULTS_SCHEMA!r}")
        for key in ("method", "method_version", "bench", "bench_version", "bench_hash"):
            if key not in d:
                raise bad(key, f"missing field {key!r}")
            if not isinstance(d[key], str):
                raise bad(key, f"must be a string, got {type(d[key]).__name__}")
        for key in ("method_params", "metrics", "counts"):
            if not isinstance(d.get(key), Mapping):
                raise bad(key, f"must be an object, got {type(d.get(key)).__name__}")
        if not isinstance(d.get("provenance", {}), Mapping):
            raise bad("provenance", f"must be an object, got {type(d['provenance']).__name__}")
        seeds = d.get("seeds")
        if not isinstance(seeds, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < SEED_LIMIT for v in seeds):
            raise bad("seeds", f"must be a list of integers in [0, 2**63), got {seeds!r}")
        for key, value in d["metrics"].items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise bad(f"metrics.{key}", f"method {d['method']!r}, metric {key!r} is {value!r}, not a finite number or null")
        for key, value in d["counts"].items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad(f"counts.{key}", f"must be an integer, got {value!r}")
        if not isinstance(d.get("smoke"), bool):
            raise bad("smoke", f"must be true or false, got {d.get('smoke')!r}")
        if d.get("source", "measured") not in ("measured", "reported"):
            raise bad("source", f"must be 'measured' or 'reported', got {d.get('source')!r}")
        directions = d.get("higher_is_better", {})
        if not isinstance(directions, Mapping) or not all(isinstance(v, bool) for v in directions.values()):
            raise bad("higher_is_better", f"must map metric names to true or false, got {directions!r}")
        intervals = d.get("intervals", {})
        if not isinstance(intervals, Mapping):
            raise bad("intervals", f"must be an object, got {type(intervals).__name__}")
        for key, value in intervals.items():
            if not (
                isinstance(value, list)
                and len(value) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            ):
                raise bad(f"intervals.{key}", f"must be [low, high] with finite numbers, got {value!r}")
        extra = d.get("extra_protocols", [])
        records: dict[str, list[dict[str, Any] | None]] = {}
        for key, values in (("protocol", [d.get("protocol")]), ("extra_protocols", extra if isinstance(extra, list) else [extra])):
            try:
                records[key] = [parse_record(value) for value in values]
            except PicbenchError as exc:
                raise bad(key, str(exc)) from None
        if not isinstance(extra, list) or None in records["extra_protocols"]:
            raise bad("extra_protocols", f"must be a list of protocol records, got {str(extra)[:200]!r}")
        protocol, extra_protocols = records["protocol"][0], tuple(r for r in records["extra_protocols"] if r is not None)
        return cls(
            method=d["method"],
            method_version=d["method_version"],
            method_params=dict(d["method_params"]),
            bench=d["bench"],
            bench_version=d["bench_version"],
            bench_hash=d["bench_hash"],
            seeds=tuple(seeds),
            metrics=dict(d["metrics"]),
            counts=dict(d["counts"]),
            smoke=d["smoke"],
            provenance=dict(d.get("provenance", {})),
            source=d.get("source", "measured"),
            higher_is_better=dict(directions),
            intervals={k: (float(v[0]), float(v[1])) for k, v in intervals.items()},
            coverage=Coverage.from_dict(d["coverage"], file=file) if d.get("coverage") is not None else None,
            protocol=protocol,
            extra_protocols=extra_protocols,
        )


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, allow_nan=False)
        fh.write("\n")
    return path


def save_result(result: RunResult, out_dir: str | Path) -> Path:
    return write_json_atomic(result.to_dict(), Path(out_dir) / RESULTS_FILE)


def load_result(path: str | Path) -> RunResult:
    """Load a results.json, or the one inside a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise PicbenchError(f"no results file at {path}") from None
    except OSError as exc:
        raise ResultFormatError(f"cannot read: {exc.strerror or exc}", file=path) from None
    except UnicodeDecodeError as exc:
        raise ResultFormatError(f"invalid UTF-8 at byte {exc.start}", file=path) from None
    except json.JSONDecodeError as exc:
        raise ResultFormatError(f"malformed JSON: {exc.msg}", file=path, line=exc.lineno) from None
    except (RecursionError, ValueError) as exc:
        raise ResultFormatError(f"malformed JSON: {exc or 'nested too deeply'}", file=path) from None
    return RunResult.from_dict(data, file=path)


def bench_and_direction_mismatches(a: RunResult, b: RunResult, keys: Iterable[str]) -> list[str]:
    """Why two runs' per-item scores cannot be paired (empty when they can): another bench (name
    or content hash: coinciding sample ids would pair different samples), or a metric of ``keys``
    whose declared direction differs (the verdict "A is better" would depend on whose you take)."""
    problems = []
    if (a.bench, a.bench_hash) != (b.bench, b.bench_hash):
        problems.append(f"they ran on different benches: A on {a.bench} (hash {a.bench_hash}), B on {b.bench} (hash {b.bench_hash})")
    for key in keys:
        base = key.split(".", 1)[0]
        da, db = (r.higher_is_better.get(key, r.higher_is_better.get(base)) for r in (a, b))
        if da is not None and db is not None and da != db:
            problems.append(f"metric {key}: A says {'higher' if da else 'lower'} is better, B says {'higher' if db else 'lower'} is better")
    return problems


def iter_sample_scores(run_dir: str | Path) -> Iterator[tuple[Score, str | None]]:
    """(Score, image path relative to the run folder) for each line of samples.jsonl; a malformed
    line raises :class:`ResultFormatError` naming the file, line and field."""
    path = Path(run_dir) / SAMPLES_FILE
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                d = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ResultFormatError(f"invalid UTF-8 at byte {exc.start} of the line", file=path, line=lineno) from None
            except json.JSONDecodeError as exc:
                raise ResultFormatError(f"malformed JSON: {exc.msg}", file=path, line=lineno) from None
            except (RecursionError, ValueError) as exc:
                raise ResultFormatError(f"malformed JSON: {exc or 'nested too deeply'}", file=path, line=lineno) from None
            score = Score.from_dict(d, file=path, line=lineno)
            image = d.get("image")
            if image is not None and not isinstance(image, str):
                raise ResultFormatError(
                    f"image must be a path or null, got {image!r}", file=path, line=lineno, sample_id=score.sample_id, field="image"
                )
            yield score, image
