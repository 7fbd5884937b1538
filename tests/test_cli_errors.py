"""One CLI error path and one table of exit codes: the CLI reference's table is the helper's, no verb
writes its own error line or exit number, and every verb exits 2 on input it cannot use."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import picbench.cli.errors as cli_errors
from picbench.cli import app

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "picbench" / "cli"
runner = CliRunner()


def _table_rows(text: str) -> dict[int, str]:
    """code -> constant, from the rows of a table that name an ``EXIT_*`` constant."""
    return {int(code): name for code, name in re.findall(r"^\W*(\d+)\W+`*(EXIT_[A-Z_]+)`*", text, flags=re.MULTILINE)}


def test_cli_reference_table_is_the_helpers_table() -> None:
    reference = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    section = reference.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    expected = {code: name for name, code in cli_errors.EXIT_CODES.items()}
    assert _table_rows(section) == expected
    assert _table_rows(cli_errors.__doc__ or "") == expected
    assert {name: getattr(cli_errors, name) for name in cli_errors.EXIT_CODES} == cli_errors.EXIT_CODES


def test_no_verb_writes_its_own_error_line_or_exit_number() -> None:
    for path in sorted(CLI.glob("*.py")):
        if path.name == "errors.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Exit":
                assert not any(isinstance(a, ast.Constant) for a in node.args), f"{path.name}:{node.lineno}: typer.Exit with a literal code"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "error:" not in node.value, f"{path.name}:{node.lineno}: an error line of its own; use picbench.cli.errors.fail"
            if isinstance(node, ast.FunctionDef):
                assert node.name != "_fail", f"{path.name}:{node.lineno}: a second fail helper"


def test_fail_prints_the_message_as_written_and_exits_with_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    with pytest.raises(typer.Exit) as exited:
        cli_errors.fail("no file runs/[red]x[/red]/results.json")
    assert exited.value.exit_code == cli_errors.EXIT_UNUSABLE == 2
    assert "error: no file runs/[red]x[/red]/results.json" in capsys.readouterr().err
    with pytest.raises(typer.Exit) as exited:
        cli_errors.fail(ValueError("boom"), cli_errors.EXIT_CHECK_FAILED)
    assert exited.value.exit_code == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "--method", "nosuch", "--bench", "dreambench", "--out", "{tmp}/r"], "unknown method 'nosuch'"),
        (["merge", "{tmp}"], "nothing to merge"),
        (["regress", "{tmp}/[red]none.json", "--baseline", "{tmp}/base.csv"], "[red]none.json"),
        (["report", "{tmp}/[red]run", "--out", "{tmp}/r.html"], "[red]run"),
        (["leaderboard", "export", "{tmp}/missing.json", "--out", "{tmp}/x.csv"], "missing.json"),
        (["leaderboard", "show", "{tmp}/missing.csv"], "missing.csv"),
        (["bench", "build", "nosuch"], "unknown buildable bench 'nosuch'"),
        (["bench", "export", "nosuch-bench", "--format", "jsonl", "--out", "{tmp}/b.jsonl"], "nosuch-bench"),
        (["validate", "dreambench", "--data-dir", "{tmp}/no-data"], "no-data"),
        (["data", "build", "paste-pairs", "--n", "0", "--singles", "0", "--out", "{tmp}/p", "--data-dir", "{tmp}/no-data"], "error:"),
    ],
)
def test_every_verb_exits_2_on_unusable_input(tmp_path: Path, args: list[str], says: str) -> None:
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args], env={"COLUMNS": "400"})
    text = " ".join(result.output.split())
    assert result.exit_code == cli_errors.EXIT_UNUSABLE, result.output
    assert "error:" in text and says in text, result.output
