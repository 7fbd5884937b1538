"""Hostile and careless bench files (issue classes 2, 3 and 4): one reader and one rule set for
`picbench validate` and for loading, bounds on what a record may ask for, and every image decode
failure named as that image's problem. Each case asserts what the message names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from picbench import records
from picbench.benches.jsonl import read_bench_jsonl, write_bench_jsonl
from picbench.cli import app
from picbench.errors import BenchFormatError, ImageError
from picbench.imaging import load_rgb
from picbench.problems import ProblemSink
from picbench.records import BENCH_SCHEMA, Bench, Sample, Subject
from picbench.validate import validate_bench_file

runner = CliRunner()
DOG = "dreambench/dataset/dog/00.jpg"
HEADER = json.dumps({"schema": BENCH_SCHEMA, "name": "hostile", "version": "1"})


def _record(sid: str = "s0", **changes: object) -> dict:
    record = Sample(sid, "a dog", 64, 64, "single", (Subject("dog", "dog", (DOG,), box=(0.1, 0.1, 0.9, 0.9), depth=0),)).to_dict()
    record.update(changes)
    return record


def _write(tmp_path: Path, lines: list[str | dict], name: str = "b.jsonl") -> Path:
    path = tmp_path / name
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_bytes(text.encode("utf-8"))
    return path


def _both(path: Path, data_dir: Path) -> tuple[BenchFormatError, list]:
    """The loader's first error and validate's problems for one file: they must agree."""
    with pytest.raises(BenchFormatError) as info:
        read_bench_jsonl(path, data_dir)
    report = validate_bench_file(path, data_dir, check_images=False)
    assert not report.ok, "validate passed a file the loader refuses"
    assert (info.value.line, info.value.code) in [(p.line, p.code) for p in report.errors]
    assert str(path) in str(info.value), "the message names the file given"
    return info.value, report.errors


# -- class 4: one parser ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "   \n\t\n"])
def test_empty_or_blank_file_is_refused_by_both(tmp_path: Path, data_dir: Path, text: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    exc, _ = _both(path, data_dir)
    assert exc.code == "empty-bench" and "no bench header and no samples" in str(exc)


def test_header_only_bench_is_refused_by_both(tmp_path: Path, data_dir: Path) -> None:
    exc, _ = _both(_write(tmp_path, [HEADER]), data_dir)
    assert exc.code == "empty-bench" and "no samples" in str(exc)


@pytest.mark.parametrize("separator", ["\u2028", "\u0085", "\x0c", "\u2029", "\r"])
def test_line_numbers_survive_separators_inside_strings(tmp_path: Path, data_dir: Path, separator: str) -> None:
    """A prompt holding U+2028, U+0085 or a form feed is legal JSON; the broken record after it is
    named at its true line (4), by the loader and by validate."""
    good = _record("s0", prompt=f"a dog{separator}on the grass")
    path = _write(tmp_path, [HEADER, good, _record("s1"), "{broken"])
    exc, errors = _both(path, data_dir)
    assert exc.line == 4 and exc.code == "malformed-json"
    assert [p.line for p in errors] == [4]
    assert read_bench_jsonl(_write(tmp_path, [HEADER, good], "ok.jsonl"), data_dir).samples[0].prompt == good["prompt"]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"id": "s1", "width": ' + "9" * 5000 + "}", "digits"),
    ],
)
def test_deep_nesting_and_huge_integers_name_file_and_line(tmp_path: Path, data_dir: Path, line: str, says: str) -> None:
    exc, _ = _both(_write(tmp_path, [HEADER, _record(), line]), data_dir)
    assert exc.line == 3 and says in str(exc)


def test_invalid_utf8_and_nul_in_a_path_name_file_and_line(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "bytes.jsonl"
    path.write_bytes((HEADER + "\n" + json.dumps(_record()) + "\n").encode() + b'{"id": "s\xff"}\n')
    exc, _ = _both(path, data_dir)
    assert exc.line == 3 and exc.code == "bad-encoding" and "UTF-8" in str(exc)
    nul = _record("s1")
    nul["subjects"][0]["references"] = ["dreambench/dataset/dog/00.jpg\u0000.png"]
    exc, _ = _both(_write(tmp_path, [HEADER, _record(), nul], "nul.jsonl"), data_dir)
    assert (exc.line, exc.sample_id, exc.field) == (3, "s1", "subjects[0].references[0]") and "U+0000" in str(exc)


@pytest.mark.parametrize("box", [[False, False, True, True], ["0.1", "0.1", "0.9", "0.9"], [0.1, None, 0.9, 0.9]])
def test_boxes_of_strings_or_booleans_are_refused(tmp_path: Path, data_dir: Path, box: list) -> None:
    record = _record("s1")
    record["subjects"][0]["box"] = box
    exc, _ = _both(_write(tmp_path, [HEADER, _record(), record]), data_dir)
    assert (exc.line, exc.sample_id, exc.field, exc.code) == (3, "s1", "subjects[0].box", "bad-box")


def test_validate_lists_every_problem_and_the_loader_the_first(tmp_path: Path, data_dir: Path) -> None:
    path = _write(tmp_path, [HEADER, _record("a", width=0), "[1, 2]", _record("a", prompt="  ")])
    exc, errors = _both(path, data_dir)
    assert (exc.line, exc.field) == (2, "width")
    assert [(p.line, p.code) for p in errors] == [(2, "bad-size"), (3, "malformed-json"), (4, "empty-prompt"), (4, "duplicate-id")]


def test_a_rule_added_once_is_enforced_by_validate_and_the_loader(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13.1: the record rules are written once; appending one shows it in `picbench validate`
    (and in `Sample.from_dict`) with no second edit."""

    def no_cats(d: dict, problems: ProblemSink) -> None:
        if "cat" in str(d.get("prompt", "")):
            problems.error("no-cats", "prompts may not mention cats", "prompt")

    path = _write(tmp_path, [HEADER, _record("s0"), _record("s1", prompt="a cat")])
    assert runner.invoke(app, ["validate", str(path), "--data-dir", str(data_dir), "--no-images"]).exit_code == 0
    monkeypatch.setattr(records, "SAMPLE_RULES", [*records.SAMPLE_RULES, no_cats])
    result = runner.invoke(app, ["validate", str(path), "--data-dir", str(data_dir), "--no-images", "--json"])
    assert result.exit_code == 1
    found = json.loads(result.output)["problems"]
    assert [(p["code"], p["line"], p["sample_id"], p["field"]) for p in found] == [("no-cats", 3, "s1", "prompt")]
    with pytest.raises(BenchFormatError, match="s1.*prompt.*may not mention cats"):
        Sample.from_dict(_record("s1", prompt="a cat"))


# -- class 2: bounds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "env"),
    [
        ({"width": 20000}, "width", "PICBENCH_MAX_SIDE"),
        ({"height": 100000}, "height", "PICBENCH_MAX_SIDE"),
        ({"prompt": "a dog " * 1000}, "prompt", "PICBENCH_MAX_PROMPT_CHARS"),
        ({"id": "x" * 1000}, "id", "PICBENCH_MAX_ID_CHARS"),
    ],
)
def test_sizes_and_lengths_are_bounded_and_the_limit_is_named(tmp_path: Path, data_dir: Path, changes: dict, field: str, env: str) -> None:
    exc, _ = _both(_write(tmp_path, [HEADER, _record("s1", **changes)]), data_dir)
    assert exc.field == field and exc.line == 2 and env in str(exc)


def test_subjects_and_references_are_bounded_and_overridable(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subject = _record()["subjects"][0] | {"box": None, "depth": None}
    many = _record("s1", split="multi", subjects=[subject | {"name": f"dog{i}"} for i in range(10000)])
    exc, _ = _both(_write(tmp_path, [HEADER, many]), data_dir)
    assert (exc.field, exc.code) == ("subjects", "bad-subjects") and "10000 subjects" in str(exc) and "PICBENCH_MAX_SUBJECTS" in str(exc)
    refs = _record("s2")
    refs["subjects"][0]["references"] = [DOG] * 65
    exc, _ = _both(_write(tmp_path, [HEADER, refs], "refs.jsonl"), data_dir)
    assert exc.field == "subjects[0].references" and "PICBENCH_MAX_REFERENCES" in str(exc)
    monkeypatch.setenv("PICBENCH_MAX_REFERENCES", "100")
    assert len(read_bench_jsonl(tmp_path / "refs.jsonl", data_dir).samples[0].subjects[0].references) == 65
    monkeypatch.setenv("PICBENCH_MAX_SIDE", "zero")
    with pytest.raises(Exception, match="PICBENCH_MAX_SIDE='zero'"):
        Sample.from_dict(_record())


# -- class 3: every decode failure is the image's named problem ----------------------------------


def test_a_decompression_bomb_is_that_images_problem(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    Image.new("RGB", (300, 300), "red").save(root / "imgs" / "big.png")
    Image.new("RGB", (64, 64), "blue").save(root / "imgs" / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300 // 4)  # 300 x 300 is then over twice the limit: an error
    with pytest.raises(ImageError, match="big.png.*pixel limit"):
        load_rgb(root / "imgs" / "big.png")
    samples = [
        Sample("bomb", "a dog", 64, 64, "single", (Subject("dog", "dog", ("imgs/big.png",)),)),
        Sample("fine", "a dog", 64, 64, "single", (Subject("dog", "dog", ("imgs/ok.png", "imgs/missing.png")),)),
    ]
    path = write_bench_jsonl(Bench("decode", "1", tuple(samples), root), tmp_path / "decode.jsonl")
    report = validate_bench_file(path, root)
    by_code = {(p.code, p.sample_id, p.line): p.message for p in report.errors}
    assert set(by_code) == {("corrupt-image", "bomb", 2), ("missing-image", "fine", 3)}, "every image problem, none lost"
    assert "imgs/big.png" in by_code[("corrupt-image", "bomb", 2)] and "pixel limit" in by_code[("corrupt-image", "bomb", 2)]
    result = runner.invoke(app, ["validate", str(path), "--data-dir", str(root)])
    assert result.exit_code == 1 and "Traceback" not in result.output and "imgs/big.png" in result.output
