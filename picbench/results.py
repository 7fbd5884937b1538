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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from picbench.atomic import atomic_write
from picbench.errors import PicbenchError
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = RESULTS_SCHEMA
        d["seeds"] = list(self.seeds)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, file: str | Path | None = None) -> "RunResult":
        if d.get("schema") != RESULTS_SCHEMA:
            raise PicbenchError(f"{file or 'results'}: schema {d.get('schema')!r} is not {RESULTS_SCHEMA!r}")
        try:
            return cls(
                method=d["method"], method_version=d["method_version"], method_params=dict(d["method_params"]),
                bench=d["bench"], bench_version=d["bench_version"], bench_hash=d["bench_hash"],
                seeds=tuple(d["seeds"]), metrics=dict(d["metrics"]), counts=dict(d["counts"]),
                smoke=bool(d["smoke"]), provenance=dict(d.get("provenance", {})), source=d.get("source", "measured"),
            )
        except KeyError as exc:
            raise PicbenchError(f"{file or 'results'}: missing field {exc.args[0]!r}") from None


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
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PicbenchError(f"no results file at {path}") from None
    except json.JSONDecodeError as exc:
        raise PicbenchError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    return RunResult.from_dict(data, file=path)


def iter_sample_scores(run_dir: str | Path) -> Iterator[tuple[Score, str | None]]:
    """(Score, image path relative to the run folder) for each line of samples.jsonl."""
    path = Path(run_dir) / SAMPLES_FILE
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PicbenchError(f"{path}:{lineno}: malformed JSON: {exc.msg}") from None
                yield Score.from_dict(d), d.get("image")
