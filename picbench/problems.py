"""Where record checks report: one set of rules, two ways to listen.

A rule (``picbench.records.SAMPLE_RULES``, the bench-file reader) never raises; it reports each
problem into a sink. :class:`RaiseFirst` turns the first error into a :class:`BenchFormatError`
(what ``Sample.from_dict`` and the bench loader do); :class:`Collect` keeps every problem (what
``picbench validate`` does). So a rule added once is enforced by both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from picbench.errors import BenchFormatError

Severity = Literal["error", "warning"]


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


class ProblemSink(ABC):
    """Receives problems stamped with the file, line and sample they belong to; :meth:`at` gives
    a view of the same sink with more of that context filled in. ``n_errors`` counts the errors
    reported through this sink or view."""

    def __init__(self, file: str | Path | None = None, line: int | None = None, sample_id: str | None = None) -> None:
        self.context = Problem("error", "", "", str(file) if file is not None else None, line, sample_id)
        self.n_errors = 0

    def at(self, *, line: int | None = None, sample_id: str | None = None) -> ProblemSink:
        context = replace(
            self.context,
            line=line if line is not None else self.context.line,
            sample_id=sample_id if sample_id is not None else self.context.sample_id,
        )
        return _View(self, context)

    def error(self, code: str, message: str, field: str | None = None) -> None:
        self.report(replace(self.context, severity="error", code=code, message=message, field=field))

    def warning(self, code: str, message: str, field: str | None = None) -> None:
        self.report(replace(self.context, severity="warning", code=code, message=message, field=field))

    def report(self, problem: Problem) -> None:
        self.n_errors += problem.severity == "error"
        self.emit(problem)

    @abstractmethod
    def emit(self, problem: Problem) -> None: ...


class _View(ProblemSink):
    """A sink's view with more context; problems go on to the sink it came from."""

    def __init__(self, parent: ProblemSink, context: Problem) -> None:
        self.parent, self.context, self.n_errors = parent, context, 0

    def emit(self, problem: Problem) -> None:
        self.parent.report(problem)


class RaiseFirst(ProblemSink):
    """The first error raises :class:`BenchFormatError` naming file, line, sample and field (its
    ``code`` attribute is the rule's code); warnings are for ``picbench validate`` and dropped."""

    def emit(self, problem: Problem) -> None:
        if problem.severity == "error":
            exc = BenchFormatError(problem.message, file=problem.file, line=problem.line, sample_id=problem.sample_id, field=problem.field)
            exc.code = problem.code
            raise exc


class Collect(ProblemSink):
    """Keeps every problem, in order, in ``problems`` (shared by all views from :meth:`at`)."""

    def __init__(self, file: str | Path | None = None, line: int | None = None, sample_id: str | None = None) -> None:
        super().__init__(file, line, sample_id)
        self.problems: list[Problem] = []

    def emit(self, problem: Problem) -> None:
        self.problems.append(problem)
