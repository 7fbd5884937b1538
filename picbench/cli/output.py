"""Output for machines: ``--json`` (one JSON document on stdout, the human output moved to stderr)
and GitHub's job summary (``GITHUB_STEP_SUMMARY``: a Markdown file a CI step appends to)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from picbench.cli.app import console
from picbench.cli.errors import warn


@contextmanager
def human_output_to_stderr(enabled: bool) -> Iterator[None]:
    """With ``--json``, everything the verb prints for people (tables, bars, notes) goes to stderr,
    so stdout holds the JSON document alone."""
    if not enabled:
        yield
        return
    before = console.stderr
    console.stderr = True  # rich writes to the sys.stderr of the moment (a test's capture included)
    try:
        yield
    finally:
        console.stderr = before


def emit_json(document: Any) -> None:
    """Write ``document`` as one JSON document on stdout. A reader that closed the pipe early
    (``picbench ... --json | head -1``) ends the output quietly: the rest is dropped without a traceback."""
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit and would report the broken pipe: point it at devnull
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout without a file descriptor (a test's capture)
            pass
        finally:
            os.close(devnull)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` and line breaks in cells are escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def append_step_summary(markdown: str) -> None:
    """Append to the file ``GITHUB_STEP_SUMMARY`` names (GitHub Actions shows it on the job's page).
    A file that cannot be written is a warning: the verdict and exit code stay the same."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(markdown.rstrip("\n") + "\n\n")
    except OSError as exc:
        warn(f"GITHUB_STEP_SUMMARY {path}: cannot append the summary ({exc.strerror or exc}); the verdict is unchanged")
