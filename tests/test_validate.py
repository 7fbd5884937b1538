"""The integrity report: a damaged bench file gets every problem named (and checking goes on
past each), odd but valid image formats are normalized rather than reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from picbench.cli.validate import validate_named
from picbench.imaging import load_rgb
from picbench.records import BENCH_SCHEMA, SAMPLE_SCHEMA, canonical_json
from picbench.validate import validate_bench_file

REAL = ["dreambench/dataset/backpack/00.jpg", "dreambench/dataset/dog/00.jpg"]


def _record(sid: str, path: str, box=(0.1, 0.1, 0.6, 0.7), **extra) -> dict:
    subject = {"name": "thing", "class_word": "backpack", "references": [path], "eval_images": [path], "box": list(box), "depth": 0}
    return {
        "schema": SAMPLE_SCHEMA,
        "id": sid,
        "prompt": "a backpack on a table",
        "width": 512,
        "height": 512,
        "split": "single",
        "subjects": [subject],
        "meta": {},
        **extra,
    }


@pytest.fixture()
def damaged(tmp_path: Path, data_dir: Path) -> tuple[Path, Path, dict[str, int]]:
    """A data root with two real images (symlinked), a truncated copy, and a bench file with one
    problem per line; returns (file, root, code -> line it must be reported at)."""
    root = tmp_path / "root"
    for rel in REAL:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(data_dir / rel)
    full = (data_dir / REAL[0]).read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (tmp_path / "outside.jpg").write_bytes(full)
    lines = [
        {"schema": BENCH_SCHEMA, "name": "damaged", "version": "1"},
        _record("good", REAL[0]),
        _record("bad-box", REAL[0], box=(0.8, 0.1, 0.2, 0.7)),
        _record("missing", "dreambench/dataset/backpack/99.jpg"),
        _record("escape", "../outside.jpg"),
        _record("absolute", str(tmp_path / "outside.jpg")),
        _record("truncated", "truncated.jpg"),
        _record("good", REAL[1]),
        None,  # malformed JSON
        _record("nan-box", REAL[1], box=(0.1, float("nan"), 0.5, 0.5)),
        _record("two-problems", REAL[1], colour="red", prompt="  "),
        _record("last-good", REAL[1]),
    ]
    text = []
    for obj in lines:
        text.append('{"id": "broken", "prompt": ' if obj is None else json.dumps(obj))
    path = tmp_path / "damaged.jsonl"
    path.write_text("\n".join(text) + "\n")
    expected = {
        "bad-box": 3,
        "missing-image": 4,
        "unsafe-path": 5,
        "corrupt-image": 7,
        "duplicate-id": 8,
        "malformed-json": 9,
        "unknown-field": 11,
        "empty-prompt": 11,
    }
    return path, root, expected


def test_damaged_file_names_every_problem(damaged) -> None:
    path, root, expected = damaged
    report = validate_bench_file(path, root)
    found = {(p.code, p.line) for p in report.problems}
    for code, line in expected.items():
        assert (code, line) in found, f"{code} at line {line} not reported; got {sorted(found)}"
    assert ("unsafe-path", 6) in found, "absolute path"
    assert ("bad-box", 10) in found, "NaN box"
    assert not report.ok and all(p.severity == "error" for p in report.problems)
    assert not any(p.line in (2, 12) for p in report.problems), [p for p in report.problems if p.line in (2, 12)]
    assert report.n_samples == 10, "the malformed line is not a sample"
    unsafe = [p for p in report.problems if p.code == "unsafe-path"]
    assert {p.sample_id for p in unsafe} == {"escape", "absolute"}
    assert all(p.file == str(path) for p in report.problems)


def test_cli_validate_damaged_exits_1(damaged) -> None:
    from typer.testing import CliRunner

    from picbench.cli import app

    path, root, expected = damaged
    result = CliRunner().invoke(app, ["validate", str(path), "--data-dir", str(root), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["errors"] == len(report["problems"]) >= len(expected) + 2
    codes = {p["code"] for p in report["problems"]}
    assert set(expected) <= codes


def test_header_problems_and_no_images(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text(
        canonical_json(_record("a", "x.jpg")) + "\n" + json.dumps({"schema": BENCH_SCHEMA, "name": "late", "version": "1"}) + "\n"
    )
    report = validate_bench_file(path, tmp_path, check_images=False)
    assert [p.code for p in report.problems] == ["bad-header", "bad-header"]
    assert [p.line for p in report.problems] == [1, 2]


def _odd_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.new("RGB", (40, 20), (200, 30, 30))
    base.paste((30, 30, 200), (0, 0, 20, 20))  # left half blue: orientation is observable
    files = {
        "gray.png": base.convert("L"),
        "palette.png": base.convert("P"),
        "rgba.png": base.convert("RGBA"),
        "cmyk.jpg": base.convert("CMYK"),
    }
    out = {}
    for name, im in files.items():
        im.save(folder / name)
        out[name] = folder / name
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    base.save(folder / "rotated.jpg", exif=exif.tobytes())
    out["rotated.jpg"] = folder / "rotated.jpg"
    return out


def test_odd_images_load_as_upright_rgb(tmp_path: Path) -> None:
    images = _odd_images(tmp_path / "imgs")
    for name, path in images.items():
        im = load_rgb(path)
        assert im.mode == "RGB", name
    rotated = load_rgb(images["rotated.jpg"])
    assert rotated.size == (20, 40)
    top = rotated.getpixel((10, 5))
    assert top[2] > top[0], "after rotating clockwise the blue half is on top"
    lines = [json.dumps({"schema": BENCH_SCHEMA, "name": "odd", "version": "1"})]
    lines += [json.dumps(_record(name, f"imgs/{name}")) for name in images]
    (tmp_path / "odd.jsonl").write_text("\n".join(lines) + "\n")
    report = validate_bench_file(tmp_path / "odd.jsonl", tmp_path)
    assert report.ok and report.problems == [] and report.n_images == len(images)


@pytest.mark.parametrize("name", ["dreambench", "dreambench-multi"])
def test_real_dreambench_is_clean(name: str, data_dir: Path) -> None:
    report = validate_named(name, data_dir)
    assert report.n_samples == 750 and report.n_images == 158
    assert report.errors == [] and report.warnings == []


def test_real_msbench_reports_the_missing_image(data_dir: Path) -> None:
    report = validate_named("msbench", data_dir)
    assert report.n_samples == 4488 and report.n_images == 40
    assert [(p.code, p.message.split(":")[0]) for p in report.errors] == [("missing-image", "msbench/images/living/cat1.jpg")]
    assert any(p.code == "loader-warning" and "cat1.jpg" in p.message for p in report.warnings)


def test_copy_of_real_bench_with_a_replaced_image(tmp_path: Path, data_dir: Path) -> None:
    """A corrupt file in place of a real image is caught even though its name is right."""
    root = tmp_path / "root"
    (root / "msbench").mkdir(parents=True)
    (root / "msbench/msbench.json").symlink_to(data_dir / "msbench/msbench.json")
    for image in (data_dir / "msbench/images").glob("*/*"):
        target = root / image.relative_to(data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(image)
    (root / "msbench/images/living/dog.jpg").unlink()
    (root / "msbench/images/living/dog.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    report = validate_named("msbench", root)
    bad = {p.message.split(":")[0]: p.code for p in report.errors}
    assert bad == {"msbench/images/living/dog.jpg": "corrupt-image", "msbench/images/living/cat1.jpg": "missing-image"}
