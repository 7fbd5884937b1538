"""Training pair sets: the paste-pairs builder on the real data, the pair reader and validator,
and the Hugging Face round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from picbench.benches.jsonl import read_bench_jsonl, write_bench_jsonl
from picbench.cli import app
from picbench.errors import BenchFormatError, PicbenchError, UnsafePathError
from picbench.pairs import (
    PAIRS_FILE,
    load_pairs_hf,
    read_pairs,
    reference_paths,
    save_pairs_hf,
    target_path,
    validate_pairs,
)
from picbench.pairs.paste import build_paste_pairs
from picbench.records import PAIRS_KIND


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "paste"
    build_paste_pairs(data_dir, out, seed=0, n_multi=6, n_single=2)
    return out


def test_same_seed_same_bytes_other_seed_other_pairs(built: Path, data_dir: Path, tmp_path: Path) -> None:
    again = build_paste_pairs(data_dir, tmp_path / "again", seed=0, n_multi=6, n_single=2)
    assert _files(tmp_path / "again") == _files(built)
    other = build_paste_pairs(data_dir, tmp_path / "other", seed=1, n_multi=6, n_single=2)
    assert [s.to_dict() for s in other.samples] != [s.to_dict() for s in again.samples]


def test_pairs_validate_and_follow_the_rules(built: Path, data_dir: Path) -> None:
    report = validate_pairs(built)
    assert report.ok and not report.warnings, [p.message for p in report.problems]
    pairs = read_pairs(built)
    assert pairs.kind == PAIRS_KIND and pairs.data_root == built
    assert [s.split for s in pairs.samples] == ["single"] * 2 + ["multi"] * 6
    assert all(len(s.subjects) in (2, 3) for s in pairs.samples if s.split == "multi")
    assert any(s.meta["overlap"] for s in pairs.samples)
    for sample in pairs.samples:
        assert sorted(sub.depth for sub in sample.subjects) == list(range(len(sample.subjects)))
        with Image.open(target_path(pairs, sample)) as im:
            assert im.size == (sample.width, sample.height)
        for sub, ref in zip(sample.subjects, reference_paths(pairs, sample)):
            assert ref.read_bytes() == (data_dir / sub.references[0]).read_bytes()  # copied byte for byte
        assert all(p != sub.references[0] for p, sub in zip(sample.meta["pasted"], sample.subjects))


def test_front_subject_is_pasted_last(built: Path, data_dir: Path) -> None:
    """Where two boxes overlap, the pixels there are the front subject's pasted image."""
    pairs = read_pairs(built)
    sample = next(s for s in pairs.samples if s.meta["overlap"])
    front = min(range(len(sample.subjects)), key=lambda i: sample.subjects[i].depth)
    back = next(i for i in range(len(sample.subjects)) if i != front)
    a, b = sample.subjects[front].box, sample.subjects[back].box
    ix, iy = (max(a[0], b[0]) + min(a[2], b[2])) / 2, (max(a[1], b[1]) + min(a[3], b[3])) / 2
    x0, y0, x1, y1 = (round(v * 512) for v in a)
    pasted = Image.open(data_dir / sample.meta["pasted"][front]).convert("RGB").resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC)
    px, py = round(ix * 512), round(iy * 512)
    target = Image.open(target_path(pairs, sample)).convert("RGB")
    assert target.getpixel((px, py)) == pasted.getpixel((px - x0, py - y0))


def test_hf_round_trip(built: Path, tmp_path: Path) -> None:
    pairs = read_pairs(built)
    save_pairs_hf(pairs, tmp_path / "hf")
    back = load_pairs_hf(tmp_path / "hf", tmp_path / "back")
    assert back.kind == PAIRS_KIND
    assert _files(tmp_path / "back") == _files(built)


def test_hf_rows_stream_one_at_a_time(built: Path, tmp_path: Path) -> None:
    """A streamed dataset (``IterableDataset``, as ``load_dataset(..., streaming=True)`` gives)
    rebuilds the same pairs and images, row by row."""
    import datasets

    from picbench.benches.hf import iter_dataset_samples

    pairs = read_pairs(built)
    save_pairs_hf(pairs, tmp_path / "hf")
    stream = datasets.load_from_disk(str(tmp_path / "hf")).to_iterable_dataset()
    rows = list(iter_dataset_samples(stream, tmp_path / "root"))
    assert [s for _, s in rows] == list(pairs.samples) and rows[0][0]["kind"] == PAIRS_KIND
    for sample in pairs.samples:
        assert (tmp_path / "root" / sample.target).read_bytes() == target_path(pairs, sample).read_bytes()


def test_a_bench_is_not_a_pair_set(data_dir: Path, tmp_path: Path) -> None:
    from picbench.benches import load_bench

    bench = load_bench("dreambench", data_dir).with_samples(load_bench("dreambench", data_dir).samples[:2])
    write_bench_jsonl(bench, tmp_path / PAIRS_FILE)
    with pytest.raises(BenchFormatError, match="kind") as err:
        read_pairs(tmp_path)
    assert err.value.field == "kind"
    with pytest.raises(PicbenchError, match="no pair set"):
        read_pairs(tmp_path / "nowhere")


def _rewrite(built: Path, tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    lines = (built / PAIRS_FILE).read_text().splitlines()
    record = json.loads(lines[1])
    edit(record)
    lines[1] = json.dumps(record)
    folder = tmp_path / "bad"
    folder.mkdir(parents=True)
    for rel, data in _files(built).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (folder / PAIRS_FILE).write_text("\n".join(lines) + "\n")
    return folder


def test_missing_target_names_sample_and_field(built: Path, tmp_path: Path) -> None:
    folder = _rewrite(built, tmp_path, lambda r: r.pop("target"))
    with pytest.raises(BenchFormatError, match="no target image") as err:
        read_pairs(folder)
    assert (err.value.sample_id, err.value.field) == (read_pairs(built).samples[0].id, "target")
    assert any(p.code == "not-a-pair" and p.field == "target" for p in validate_pairs(folder).errors)


def test_unreadable_target_and_escaping_path_are_reported(built: Path, tmp_path: Path) -> None:
    folder = _rewrite(built, tmp_path, lambda r: r.update(target="targets/gone.png"))
    errors = validate_pairs(folder).errors
    assert [(p.code, p.line, p.field) for p in errors] == [("missing-image", 2, "target")]
    escaping = _rewrite(built, tmp_path / "x", lambda r: r.update(target="../../etc/passwd"))
    assert any(p.code == "unsafe-path" and p.field == "target" for p in validate_pairs(escaping).errors)
    pairs = read_bench_jsonl(escaping / PAIRS_FILE, escaping)
    with pytest.raises(UnsafePathError):
        target_path(pairs, pairs.samples[0])


def test_cli_build(data_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "data",
            "build",
            "paste-pairs",
            "--seed",
            "3",
            "--n",
            "2",
            "--singles",
            "1",
            "--out",
            str(tmp_path / "p"),
            "--data-dir",
            str(data_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "built paste-pairs v1 (seed 3): 1 single + 2 multi pairs" in result.output
    assert len(read_pairs(tmp_path / "p")) == 3
    bad = CliRunner().invoke(
        app, ["data", "build", "paste-pairs", "--n", "0", "--singles", "0", "--out", str(tmp_path / "q"), "--data-dir", str(data_dir)]
    )
    assert bad.exit_code == 2 and "positive number of pairs" in bad.output
