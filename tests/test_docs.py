"""The documentation holds together: every relative link and #anchor in README.md and docs/*.md
resolves (GitHub's heading slugs), every code fence is closed by a bare fence, every page is in the
docs index, every repository path they name exists, every `picbench VERB [SUBVERB]` they name
answers `--help` and every verb of the CLI is named."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from picbench.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
REPO_PATH = re.compile(r"^(?:picbench|adapters|reference_impl|tests|benchmarks|examples|scripts|leaderboards|docs)/[\w./-]+$")
PLACEHOLDER = re.compile(r"NAME|VERB|AREA|REGISTRY")
VERB = re.compile(r"(?<![\w./$-])picbench ([a-z][a-z-]*)((?: [a-z][a-z-]*)*)")


def fence_problems(text: str) -> list[str]:
    """Line-numbered problems: a fence closed by a line with more than the fence on it (the
    renderer keeps it open), or a fence left open at the end."""
    problems, opened = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if not match:
            continue
        marks, rest = match.groups()
        if opened is None:
            opened = (number, marks)
        elif marks[0] == opened[1][0] and len(marks) >= len(opened[1]):
            if rest.strip():
                problems.append(f"line {number}: text after the closing fence of line {opened[0]}: {line!r}")
            opened = None
    if opened is not None:
        problems.append(f"line {opened[0]}: code fence never closed")
    return problems


def outside_fences(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    kept, opened = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if match and (opened is None or (match.group(1)[0] == opened[0] and len(match.group(1)) >= len(opened))):
            opened = match.group(1) if opened is None else None
        elif opened is None:
            kept.append(line)
    return kept


def prose(text: str) -> str:
    """The text outside fenced code blocks and code spans (links there are not links)."""
    return "\n".join(CODE_SPAN.sub("", line) for line in outside_fences(text))


def code(text: str) -> list[str]:
    """The lines of fenced code blocks and the contents of code spans."""
    chunks, opened = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if match and (opened is None or (match.group(1)[0] == opened[0] and len(match.group(1)) >= len(opened))):
            opened = match.group(1) if opened is None else None
        elif opened is not None:
            chunks.append(line)
        else:
            chunks += [m.group(2) for m in CODE_SPAN.finditer(line)]
    return chunks


def missing_paths(text: str) -> list[str]:
    """Repository paths named in code spans or blocks (a whole span or line) that do not exist."""
    named = {chunk.strip() for chunk in code(text) if REPO_PATH.match(chunk.strip())}
    return sorted(p for p in named if not PLACEHOLDER.search(p) and not (REPO / p).exists())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation but `-` and `_` gone,
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, repeats numbered as GitHub numbers them (`-1`, `-2`)."""
    seen: Counter[str] = Counter()
    found = set()
    for line in outside_fences(path.read_text(encoding="utf-8")):
        if match := re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = slug(match.group(1))
            found.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def link_problems(path: Path) -> list[str]:
    problems = []
    for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{path.name}: {target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{path.name}: {target}: no heading with anchor #{anchor} in {linked.name}")
    return problems


def command_paths(command: Any = None, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every runnable verb of the CLI as its words, e.g. ("data", "build", "bmpds")."""
    command = command or typer.main.get_command(app)
    subcommands = getattr(command, "commands", {})
    if not subcommands:
        return {prefix}
    return set().union(*(command_paths(sub, (*prefix, name)) for name, sub in subcommands.items()))


def named_verbs() -> dict[tuple[str, ...], str]:
    """Every `picbench VERB [SUBVERB ...]` in code (spans and blocks) of the pages -> the first page
    naming it. Words are taken while they name a subcommand of the group before them, so
    `picbench ls methods` is ("ls",) and `picbench data build bmpds x` is ("data", "build", "bmpds")."""
    found: dict[tuple[str, ...], str] = {}
    for path in PAGES:
        for chunk in code(path.read_text(encoding="utf-8")):
            for match in VERB.finditer(chunk):
                words, command = [match.group(1)], typer.main.get_command(app)
                command = getattr(command, "commands", {}).get(words[0])
                for word in match.group(2).split():
                    if word not in getattr(command, "commands", {}):
                        break
                    words.append(word)
                    command = command.commands[word]
                found.setdefault(tuple(words), path.name)
    return found


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_code_fences_are_balanced_and_closed_bare(path: Path) -> None:
    assert fence_problems(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert link_problems(path) == []


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_named_in_code_exists(path: Path) -> None:
    """`picbench/metrics/occlusion.py` and the like, named in code spans, still exist after a move
    (placeholders such as `adapters/NAME.py` are skipped)."""
    assert missing_paths(path.read_text(encoding="utf-8")) == []


def test_the_readme_stays_short() -> None:
    """The README is the entry point (what it is, install, the main and test commands, a line per
    verb, links); everything longer has a page under docs/."""
    readme = (REPO / "README.md").read_bytes()
    assert len(readme) < 25_000 and readme.count(b"\n") <= 250


def test_every_docs_page_is_in_the_index_and_the_readme_links_the_index() -> None:
    index = DOCS / "README.md"
    linked = {target.partition("#")[0] for target in LINK.findall(prose(index.read_text(encoding="utf-8")))}
    assert {p.name for p in DOCS.glob("*.md")} - {"README.md"} <= linked
    assert "docs/README.md" in LINK.findall(prose((REPO / "README.md").read_text(encoding="utf-8")))


def test_every_verb_the_docs_name_answers_help() -> None:
    verbs = named_verbs()
    assert command_paths() <= set(verbs), "a verb the docs never name"
    runner = CliRunner()
    failed = {}
    for words, page in sorted(verbs.items()):
        result = runner.invoke(app, [*words, "--help"])
        if result.exit_code != 0 or "Usage" not in result.output:
            failed[" ".join(words)] = f"{page}: exit {result.exit_code}: {result.output[-300:]}"
    assert failed == {}


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """A closing fence with prose on it, a dead link, a dead anchor and an unknown verb are found."""
    broken = "```\n$ picbench report x\n``` Plot labels\n\n## Plot labels\n"
    assert fence_problems(broken) and not fence_problems("```bash\nx\n```\n")
    page = tmp_path / "page.md"
    page.write_text("## A `picbench run` heading!\n\n[ok](#a-picbench-run-heading) [dead](#nope) [gone](other.md) `[x](not.md)`\n")
    assert link_problems(page) == [
        "page.md: #nope: no heading with anchor #nope in page.md",
        f"page.md: other.md: no file {tmp_path / 'other.md'}",
    ]
    assert CliRunner().invoke(app, ["no-such-verb", "--help"]).exit_code != 0
    assert missing_paths("`picbench/metrics/engine_gone.py`, `picbench/cli/app.py`, `adapters/NAME.py`") == [
        "picbench/metrics/engine_gone.py"
    ]
