"""Leaderboards: run results (measured, or numbers copied from a paper) merged into one CSV with a
row per method and bench, a column per metric, and the provenance that says where a row came from.

The same table is what ``picbench regress`` reads as a baseline, so a results file and a
leaderboard row are made comparable here, once.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picbench.atomic import atomic_write
from picbench.coverage import Counts, Coverage
from picbench.errors import PicbenchError, ResultFormatError
from picbench.metrics import output_keys
from picbench.protocols import UNKNOWN, ProtocolMismatchError, label, parse_record
from picbench.results import RESULTS_FILE, RunResult, load_result

if TYPE_CHECKING:
    import pandas as pd

KEY_COLUMNS = ["method", "bench", "source", "smoke"]
"""A leaderboard holds one row per value of these columns."""

PROVENANCE_COLUMNS = [
    "method_version",
    "weights",
    "bench_version",
    "bench_hash",
    "seeds",
    "picbench_version",
    "git_hash",
    "date",
    "limit",
    "citation",
    "note",
    "lower_is_better",
    "protocol",
    "protocol_hash",
    "extra_protocols",
    "protocol_fields",
    "origin",
]
COUNT_COLUMNS = ["n_items", "n_failures"]
COVERAGE_COLUMNS = ["coverage", "n_expected", "n_scored"]
"""``coverage``: ``scored/expected`` (``PARTIAL`` added when short, ``unknown`` for a measured row
of an older results file, empty for a reported number); the counts beside it feed ``regress``."""
SPLITS = ["", ".single", ".multi"]


def known_metrics() -> list[str]:
    """Metric columns in the order a reader expects them: every registered metric's outputs
    (:func:`picbench.metrics.output_keys`), each overall then per split; unknown keys follow, sorted."""
    return [m + s for m in output_keys() for s in SPLITS]


CI_SUFFIXES = ("_ci_low", "_ci_high")
"""``clip_i_ci_low`` / ``clip_i_ci_high``: the bootstrap 95% interval of ``clip_i`` (beside it)."""
SMOKE_NOTE = "SMOKE RUN: random-weight models, the numbers mean nothing"
SOURCES = ("measured", "reported")


def result_row(result: RunResult, origin: str | Path | None = None) -> dict[str, Any]:
    """One leaderboard row from one run result; ``origin`` (the file it came from) is kept so a
    reader can trace every number."""
    row: dict[str, Any] = {
        "method": result.method,
        "bench": result.bench,
        "source": result.source,
        "smoke": bool(result.smoke),
        "method_version": result.method_version,
        "bench_version": result.bench_version,
        "bench_hash": result.bench_hash,
        "seeds": " ".join(str(s) for s in result.seeds),
        **provenance_summary(result),
        "note": SMOKE_NOTE if result.smoke else _first(result.provenance, "note"),
        "lower_is_better": " ".join(sorted(k for k, high in result.higher_is_better.items() if not high)),
        **protocol_columns(result),
        "origin": str(origin) if origin is not None else "",
    }
    for key in COUNT_COLUMNS:
        value = result.counts.get(key, result.metrics.get(key))
        row[key] = int(value) if value is not None else None
    row.update(coverage_cells(result.coverage))
    for key, value in result.metrics.items():
        if key not in COUNT_COLUMNS:
            row[key] = _metric_value(value, result.method, key, origin)
    for key, (low, high) in result.intervals.items():
        if key in result.metrics:
            row[key + CI_SUFFIXES[0]], row[key + CI_SUFFIXES[1]] = low, high
    return row


def coverage_cells(coverage: Coverage | None) -> dict[str, Any]:
    """The coverage columns of a measured row."""
    if coverage is None:
        return {"coverage": "unknown", "n_expected": None, "n_scored": None}
    text = f"{coverage.scored}/{coverage.expected}" + (" PARTIAL" if coverage.partial else "")
    return {"coverage": text, "n_expected": coverage.expected, "n_scored": coverage.scored}


def coverage_label(row: Mapping[str, Any]) -> str:
    """A row's coverage cell: ``scored/expected`` (``PARTIAL`` when short), ``unknown`` for a
    measured row without coverage, empty for a reported number."""
    value = row.get("coverage")
    if isinstance(value, str) and value:
        return value
    return "" if row.get("source") == "reported" else "unknown"


def row_coverage(row: Mapping[str, Any]) -> Counts | None:
    """A row's coverage counts, None where it records none (an older results file, a reported number)."""
    expected, scored = row.get("n_expected"), row.get("n_scored")
    if not _number(expected) or not _number(scored):
        return None
    failed = row.get("n_failures")  # the engine's count: every item with a recorded failure, scored or not
    return Counts(int(expected), int(scored), int(failed) if _number(failed) else int(expected) - int(scored))


def protocol_columns(result: RunResult) -> dict[str, str]:
    """The run's protocol as CSV cells: name, hash, the other identity sets' labels, and the fields as
    compact JSON (so a baseline row can say which fields differ); empty for results without one."""
    protocol = result.protocol
    if not protocol:
        return {"protocol": "", "protocol_hash": "", "extra_protocols": "", "protocol_fields": ""}
    return {
        "protocol": str(protocol["name"]),
        "protocol_hash": str(protocol["hash"]),
        "extra_protocols": "; ".join(label(p) for p in result.extra_protocols),
        "protocol_fields": json.dumps(protocol.get("fields", {}), sort_keys=True, separators=(",", ":"), default=str),
    }


def row_protocol(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """A leaderboard row's protocol record (None: unknown, as in rows copied from a paper or written
    before picbench recorded protocols); a malformed ``protocol_fields`` cell is an error naming the row."""
    name, digest = row.get("protocol"), row.get("protocol_hash")
    if not isinstance(digest, str) or not digest.strip():
        return None
    cell = row.get("protocol_fields")
    try:
        fields = json.loads(cell) if isinstance(cell, str) and cell.strip() else {}
    except (RecursionError, ValueError) as exc:  # JSONDecodeError, or nested too deeply
        raise PicbenchError(f"{row.get('origin') or 'leaderboard'}: field 'protocol_fields' is not JSON: {exc}") from None
    return parse_record(
        {"name": name if isinstance(name, str) else "", "hash": digest, "fields": fields}, where=str(row.get("origin") or "leaderboard")
    )


def check_protocols(table: pd.DataFrame, *, allow_mismatch: bool = False) -> list[str]:
    """Refuse (:class:`ProtocolMismatchError`) a table whose measured rows of one bench were scored
    under different protocols (results without one count as the protocol ``unknown``); with
    ``allow_mismatch``, the same findings come back as warnings and the rows keep their labels.
    Reported rows (a paper's numbers) are labelled, not checked: their protocol is the paper's."""
    from picbench.protocols import differing_fields, mismatch_message

    warnings = []
    measured = table[table["source"] == "measured"]
    for bench, rows in measured.groupby("bench", sort=True):
        records = rows.to_dict("records")
        first = records[0]
        for other in records[1:]:
            a, b = row_protocol(first), row_protocol(other)
            if (a is None and b is None) or (a is not None and b is not None and a["hash"] == b["hash"]):
                continue
            message = mismatch_message(
                f"{first['method']} on {bench} ({first.get('origin') or 'row'})",
                a,
                f"{other['method']} ({other.get('origin') or 'row'})",
                b,
                differing_fields(a, b),
            )
            if not allow_mismatch:
                raise ProtocolMismatchError(message)
            warnings.append(message.split("; numbers of different")[0] + "; kept, labelled in the protocol column")
    return warnings


def protocol_label(row: Mapping[str, Any]) -> str:
    """``name #hash`` of a row, or ``unknown``."""
    record = row_protocol(row)
    return label(record) if record else UNKNOWN


def lower_is_better(row: Mapping[str, Any]) -> set[str]:
    """The base metric keys a leaderboard row marks lower-is-better (every other metric is higher-is-better)."""
    value = row.get("lower_is_better")
    return set(value.split()) if isinstance(value, str) else set()


def higher_is_better(metric: str, *rows: Mapping[str, Any]) -> bool:
    """False where any of ``rows`` marks ``metric`` (or its base key, ``missing`` for ``missing.multi``) lower-is-better."""
    marked = set().union(*(lower_is_better(r) for r in rows))
    return metric not in marked and metric.split(".", 1)[0] not in marked


def provenance_summary(result: RunResult) -> dict[str, str]:
    """The provenance a table shows: the method's weights (its checkpoints, e.g. which LoRA), picbench
    version, git commit (``-dirty`` when the checkout had changes), date, the run's ``--limit`` (a
    partial run is not the full bench) and a citation."""
    prov = result.provenance
    git = prov.get("git")
    if isinstance(git, Mapping):
        commit = str(git.get("commit") or "") + ("-dirty" if git.get("dirty") and git.get("commit") else "")
    else:
        commit = _first(prov, "git_hash", "git")
    bench = prov.get("bench")
    limit = bench.get("limit") if isinstance(bench, Mapping) else prov.get("limit")
    method = prov.get("method")
    checkpoints = method.get("checkpoints") if isinstance(method, Mapping) else None
    return {
        "weights": "; ".join(f"{k}={v}" for k, v in checkpoints.items()) if isinstance(checkpoints, Mapping) else "",
        "picbench_version": _first(prov, "picbench_version"),
        "git_hash": commit,
        "date": _first(prov, "created", "date"),
        "limit": "" if limit is None else str(limit),
        "citation": _first(prov, "citation"),
    }


def load_results(paths: Iterable[str | Path]) -> list[tuple[RunResult, Path]]:
    """Each path is a results JSON or a run folder holding one."""
    loaded = []
    for path in paths:
        path = Path(path)
        loaded.append((load_result(path), path / RESULTS_FILE if path.is_dir() else path))
    return loaded


def load_rows(paths: Iterable[str | Path], *, allow_nonfinite: bool = False) -> list[dict[str, Any]]:
    """Leaderboard rows from results JSONs, run folders and leaderboard CSVs (``*.csv``), so an
    existing leaderboard can be extended with new runs."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        if str(path).endswith(".csv"):
            rows.extend(read_leaderboard(path, allow_nonfinite=allow_nonfinite).to_dict("records"))
        else:
            rows.extend(result_row(result, origin) for result, origin in load_results([path]))
    return rows


def build_leaderboard(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a table in leaderboard column order, sorted by bench then method; two rows with the
    same method, bench, source and smoke flag are refused, naming where both came from."""
    import pandas as pd

    if not rows:
        raise PicbenchError("no results to put on a leaderboard")
    frame = pd.DataFrame(list(rows))
    duplicated = frame[frame.duplicated(KEY_COLUMNS, keep=False)]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        same = duplicated[(duplicated[KEY_COLUMNS] == first[KEY_COLUMNS]).all(axis=1)]
        raise PicbenchError(
            f"two rows for method {first['method']!r} on bench {first['bench']!r} "
            f"(source {first['source']}, smoke {bool(first['smoke'])}): {', '.join(map(str, same['origin']))}; "
            "a leaderboard holds one row per method and bench, so pass only one of them"
        )
    return _ordered(frame).sort_values(["bench", "method", "source", "smoke"], kind="stable").reset_index(drop=True)


def export_leaderboard(paths: Iterable[str | Path], out: str | Path, *, allow_protocol_mismatch: bool = False) -> pd.DataFrame:
    """Merge results files, run folders and leaderboard CSVs into the CSV at ``out`` (refused when
    measured rows of one bench come from different protocols, see :func:`check_protocols`)."""
    table = build_leaderboard(load_rows(paths))
    check_protocols(table, allow_mismatch=allow_protocol_mismatch)
    write_leaderboard(table, out)
    return table


def write_leaderboard(table: pd.DataFrame, out: str | Path) -> Path:
    import pandas as pd

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text_columns = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]
    safe = table.assign(**{c: table[c].map(neutralize_cell) for c in text_columns})
    with atomic_write(out) as fh:
        safe.to_csv(fh, index=False, float_format="%.6g")
    return out


def read_leaderboard(path: str | Path, *, allow_nonfinite: bool = False) -> pd.DataFrame:
    """A leaderboard CSV, checked: the key columns exist, ``source`` is known, metrics are finite
    numbers (``inf`` is refused naming file, line and field; with ``allow_nonfinite`` it is read
    as an absent value)."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={c: str for c in [*PROVENANCE_COLUMNS, "coverage"]})
    except FileNotFoundError:
        raise PicbenchError(f"no leaderboard file at {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise PicbenchError(f"{path}: not a readable CSV: {exc}") from None
    missing = [c for c in ("method", "bench") if c not in frame.columns]
    if missing:
        raise PicbenchError(f"{path}: leaderboard lacks column(s) {missing} (found {list(frame.columns)})")
    frame["source"] = frame["source"].fillna("measured") if "source" in frame.columns else "measured"
    frame["smoke"] = frame["smoke"].map(_as_bool) if "smoke" in frame.columns else False
    for line, source in zip(range(2, len(frame) + 2), frame["source"]):
        if source not in SOURCES:
            raise PicbenchError(f"{path}:{line}: field 'source' is {source!r}, expected one of {list(SOURCES)}")
    for column in metric_columns(frame) + interval_columns(frame):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & numeric.isna()
        if bad.any():
            line = int(bad.to_numpy().nonzero()[0][0]) + 2
            raise PicbenchError(f"{path}:{line}: field {column!r} is {frame[column][bad].iloc[0]!r}, not a number")
        nonfinite = numeric.notna() & ~numeric.apply(lambda v: math.isfinite(v) if v == v else True)
        if nonfinite.any() and allow_nonfinite:
            numeric = numeric.mask(nonfinite)
        elif nonfinite.any():
            line = int(nonfinite.to_numpy().nonzero()[0][0]) + 2
            raise ResultFormatError(
                f"{numeric[nonfinite].iloc[0]!r} is not a finite number (refused as in results JSON)", file=path, line=line, field=column
            )
        frame[column] = numeric
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column]):
            frame[column] = frame[column].map(_restore_cell)
    frame["origin"] = [f"{path}:{line}" for line in range(2, len(frame) + 2)]
    return frame


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""Cells a spreadsheet would run as a formula (OWASP's CSV injection list): written with a
leading ``'``, which spreadsheets show as text and :func:`read_leaderboard` removes again."""


def neutralize_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would evaluate, made inert; numbers and other text unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _restore_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The columns of ``table`` that hold metric values (not keys, counts, intervals or provenance)."""
    fixed = set(KEY_COLUMNS) | set(PROVENANCE_COLUMNS) | set(COUNT_COLUMNS) | set(COVERAGE_COLUMNS)
    return [c for c in table.columns if c not in fixed and not c.endswith(CI_SUFFIXES)]


def interval_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.endswith(CI_SUFFIXES)]


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    metrics = metric_columns(frame)
    order = known_metrics()
    known = [m for m in order if m in metrics]
    other = sorted(m for m in metrics if m not in order)
    present = set(frame.columns)
    with_intervals = [c for m in known + other for c in (m, m + CI_SUFFIXES[0], m + CI_SUFFIXES[1]) if c == m or c in present]
    columns = KEY_COLUMNS + with_intervals + COUNT_COLUMNS + COVERAGE_COLUMNS + PROVENANCE_COLUMNS
    return frame.reindex(columns=columns)


def _metric_value(value: Any, method: str, key: str, origin: str | Path | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PicbenchError(f"{origin or 'results'}: method {method!r}, metric {key!r} is {value!r}, not a finite number")
    return float(value)


def _number(value: Any) -> bool:
    """A finite number (numpy's integer and float scalars included), not a bool or an empty cell."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _first(mapping: Any, *keys: str) -> str:
    for key in keys:
        value = mapping.get(key) if isinstance(mapping, Mapping) else None
        if value not in (None, ""):
            return str(value)
    return ""


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if value == value else False  # NaN (empty cell) is not smoke
