"""The real bench loaders on ../shared/data: counts, cross-checks, layouts, the positionic-open
builder's determinism, and the HF datasets round trip."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import datasets
import pytest

from picbench import layouts
from picbench.benches import BENCHES, built_bench_dir, dreambench, load_bench, msbench, positionic
from picbench.benches.hf import bench_to_dataset, dataset_to_bench, load_bench_hf, save_bench_hf
from picbench.benches.jsonl import write_bench_jsonl
from picbench.errors import BenchFormatError, PicbenchError, UnknownNameError
from picbench.records import Sample


@pytest.fixture(scope="module")
def single(data_dir: Path):
    return dreambench.load(data_dir)


@pytest.fixture(scope="module")
def ms(data_dir: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", msbench.MissingImageWarning)
        return msbench.load(data_dir)


@pytest.fixture(scope="module")
def open_bench(data_dir: Path):
    return positionic.build_open(data_dir, seed=0)


def _uno(data_dir: Path, name: str) -> list[dict]:
    return json.loads((data_dir / "dreambench" / name).read_text())


def test_registry_names() -> None:
    assert {"dreambench", "dreambench-multi", "msbench", "positionic"} <= set(BENCHES.names())


def test_dreambench_counts_and_uno_cross_check(single, data_dir: Path) -> None:
    assert len(single) == 750 and len({s.id for s in single.samples}) == 750
    assert len({s.subjects[0].name for s in single.samples}) == 30
    uno = _uno(data_dir, "dreambench_singleip.json")
    ours = [(s.prompt, s.subjects[0].references[0]) for s in single.samples]
    theirs = [(e["prompt"], e["image_paths"][0].replace("./dreambooth/dataset/", "dreambench/dataset/")) for e in uno]
    assert sorted(ours) == sorted(theirs)
    for s in single.samples:
        sub = s.subjects[0]
        assert sub.box is None and sub.depth is None
        assert sub.references[0] in sub.eval_images and len(sub.eval_images) >= 4
        assert "{" not in s.prompt and dreambench.UNIQUE_TOKEN not in s.prompt.split()
        assert s.meta["prompt_with_token"].replace(f" {dreambench.UNIQUE_TOKEN}", "", 1) == s.prompt
        assert all((data_dir / p).is_file() for p in sub.eval_images)


def test_live_subjects_match_the_uno_list(data_dir: Path) -> None:
    spec = dreambench.parse_prompts_and_classes(data_dir / dreambench.PROMPTS_FILE)
    assert len(spec.object_templates) == len(spec.live_templates) == 25
    uno = _uno(data_dir, "dreambench_singleip.json")
    live_only = set(spec.live_templates) - set(spec.object_templates)
    live_phrases = {t.split("{1}", 1)[1].strip() for t in live_only}
    uno_live = {e["image_paths"][0].split("/")[-2] for e in uno if any(e["prompt"].endswith(p) for p in live_phrases)}
    assert uno_live == {n for n in spec.classes if spec.is_live(n)}
    assert len(uno_live) == 9


def test_dreambench_parser_names_the_bad_line(tmp_path: Path, data_dir: Path) -> None:
    lines = (data_dir / dreambench.PROMPTS_FILE).read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "in the snow" in line)
    lines[at] = "'a {0} {1} in the snow'.format(__import__('os'))"
    bad = tmp_path / "prompts_and_classes.txt"
    bad.write_text("\n".join(lines))
    with pytest.raises(BenchFormatError) as info:
        dreambench.parse_prompts_and_classes(bad)
    assert info.value.line == at + 1 and info.value.file == bad


def test_dreambench_multi(data_dir: Path) -> None:
    bench = dreambench.load_multi(data_dir)
    uno = _uno(data_dir, "dreambench_multiip.json")
    assert len(bench) == len(uno) == 750 and len({s.id for s in bench.samples}) == 750
    for s, e in zip(bench.samples, uno):
        assert s.split == "multi" and len(s.subjects) == 2 and s.prompt == e["prompt"]
        for sub, p in zip(s.subjects, e["image_paths"]):
            assert sub.references == (p.replace("./dreambooth/dataset/", "dreambench/dataset/"),)
            assert set(sub.references) <= set(sub.eval_images) and sub.box is None


def test_msbench_counts_match_the_authors(ms, data_dir: Path) -> None:
    spec = msbench.read_spec(data_dir)
    types, _, missing = msbench.subject_files(data_dir, spec)
    sizes = Counter(types.values())
    expected_combos = 0
    expected_samples = 0
    for ctype in [*spec["two_subject_combinations"], *spec["three_subject_combinations"]]:
        n = math.prod(math.comb(sizes[t], k) for t, k in Counter(ctype.split("_")).items())
        expected_combos += n
        expected_samples += n * len(spec["combination_prompt_templates"][ctype])
    assert expected_combos == msbench.STATED_COMBINATIONS == 1148
    assert len(ms) == expected_samples == msbench.STATED_SAMPLES == 4488
    assert len({s.id for s in ms.samples}) == len(ms)
    assert len({tuple(x.name for x in s.subjects) for s in ms.samples}) == 1148
    assert missing == ["cat1"]


def test_msbench_warns_about_the_missing_image(data_dir: Path) -> None:
    with pytest.warns(msbench.MissingImageWarning, match="cat1.jpg"):
        bench = msbench.load(data_dir)
    with_cat1 = [s for s in bench.samples if any(x.name == "cat1" for x in s.subjects)]
    assert with_cat1 and all(x.references[0].endswith("living/cat1.jpg") for s in with_cat1 for x in s.subjects if x.name == "cat1")


def test_msbench_layouts_and_depth(ms, data_dir: Path) -> None:
    spec = msbench.read_spec(data_dir)
    for s in ms.samples:
        ctype = s.meta["combination_type"]
        assert [list(x.box) for x in s.subjects] == spec["combination_boxes_xyxy_normalized"][ctype]
        assert sorted(x.depth for x in s.subjects) == list(range(len(s.subjects)))
        parts = ctype.split("_")
        for part, sub in zip(parts, s.subjects):
            if part == "scene":
                assert sub.depth == len(parts) - 1, "the scene is the background"
            if part.endswith("wearing") and "living" in parts:
                wearer = s.subjects[parts.index("living")]
                assert sub.depth < wearer.depth, "garments are in front of their wearer"
        assert s.prompt == spec["combination_prompt_templates"][ctype][s.meta["template_index"]].format(*(x.class_word for x in s.subjects))


def test_positionic_open_counts_and_layout(open_bench) -> None:
    splits = Counter(s.split for s in open_bench.samples)
    assert splits == {"single": positionic.N_SINGLE, "multi": positionic.N_MULTI} == {"single": 252, "multi": 296}
    assert open_bench.reconstruction and "-open" in open_bench.name and "RECONSTRUCTION" in open_bench.description
    assert len({s.id for s in open_bench.samples}) == len(open_bench)
    multi = [s for s in open_bench.samples if s.split == "multi"]
    assert {len(s.subjects) for s in multi} == {2, 3}
    overlapping = 0
    for s in open_bench.samples:
        assert layouts.layout_problems(s) == []
        boxes = [x.box for x in s.subjects]
        depths = [x.depth for x in s.subjects]
        assert len({x.name for x in s.subjects}) == len(s.subjects)
        pairs = list(itertools.combinations(boxes, 2))
        overlap = any(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]) for a, b in pairs)
        assert overlap == s.meta["overlap"]
        overlapping += overlap
        assert all(layouts.visible_fraction(boxes, depths, i) >= layouts.MIN_VISIBLE for i in range(len(boxes)))
    assert 0.2 * len(multi) <= overlapping <= 0.6 * len(multi)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for s in open_bench.samples for b in (x.box for x in s.subjects)]
    aspects = [(b[2] - b[0]) / (b[3] - b[1]) for s in open_bench.samples for b in (x.box for x in s.subjects)]
    assert min(areas) < 0.05 and max(areas) > 0.3
    assert min(aspects) < 0.7 and max(aspects) > 1.4
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for s in open_bench.samples for b in (x.box for x in s.subjects)]
    assert min(c[0] for c in centres) < 0.2 and max(c[0] for c in centres) > 0.8


def test_positionic_open_is_deterministic(tmp_path: Path, data_dir: Path) -> None:
    a = positionic.write_open(data_dir, tmp_path / "a.jsonl", seed=3)
    positionic.write_open(data_dir, tmp_path / "b.jsonl", seed=3)
    positionic.write_open(data_dir, tmp_path / "c.jsonl", seed=4)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    assert positionic.load_file(tmp_path / "a.jsonl", data_dir).samples == a.samples


def test_positionic_format_loader(tmp_path: Path, data_dir: Path, open_bench) -> None:
    with pytest.raises(PicbenchError, match="positionic-open"):
        positionic.load(data_dir)
    d = open_bench.samples[300].to_dict()
    d["subjects"][0]["box"] = None
    write_bench_jsonl(open_bench.with_samples([Sample.from_dict(d)]), tmp_path / "p.jsonl")
    with pytest.raises(BenchFormatError, match="no box"):
        positionic.load_file(tmp_path / "p.jsonl", data_dir)


def test_load_bench_builds_on_first_use_and_suggests(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A buildable bench asked for by name is built on first use, as `picbench bench build` builds
    it (seed 0, the same bytes), so the README's main command needs no build step."""
    monkeypatch.setenv("PICBENCH_HOME", str(tmp_path / "home"))
    target = built_bench_dir() / "positionic-open.jsonl"
    assert not target.exists()
    with caplog.at_level("WARNING"):
        assert len(load_bench("positionic-open", data_dir)) == 548
    assert "'positionic-open' is not built yet: building it now" in caplog.text
    positionic.write_open(data_dir, tmp_path / "seed0.jsonl")
    assert target.read_bytes() == (tmp_path / "seed0.jsonl").read_bytes()
    caplog.clear()
    assert len(load_bench("positionic-open", data_dir)) == 548 and "building" not in caplog.text  # built once
    with pytest.raises(UnknownNameError, match="did you mean 'positionic-open'"):
        load_bench("positionic-opn", data_dir)
    with pytest.raises(UnknownNameError, match="did you mean 'dreambench'"):
        load_bench("dreambnch", data_dir)


def test_hf_round_trip(tmp_path: Path, open_bench) -> None:
    small = open_bench.with_samples(open_bench.samples[250:253])
    ds = bench_to_dataset(small)
    assert ds.num_rows == 3 and ds.features["images"].feature["image"].__class__.__name__ == "Image"
    stored = [im["path"] for row in ds.with_format("arrow")[:].to_pylist() for im in row["images"]]
    assert len(stored) == len(set(stored)) == len(small.image_paths())
    save_bench_hf(small, tmp_path / "hf")
    back = load_bench_hf(tmp_path / "hf", tmp_path / "root")
    assert back.samples == small.samples and back.header() == small.header()
    assert back.content_hash() == small.content_hash()
    with pytest.raises(PicbenchError, match="other content"):
        (tmp_path / "root" / small.image_paths()[0]).write_bytes(b"changed")
        dataset_to_bench(ds, tmp_path / "root")
    with pytest.raises(BenchFormatError, match="missing column"):
        dataset_to_bench(datasets.Dataset.from_dict({"id": ["x"]}), tmp_path / "other")


def test_hf_hub_offline_fails_clearly(tmp_path: Path) -> None:
    code = (
        "from picbench.benches.hf import load_bench_hf\n"
        "from picbench.errors import PicbenchError\n"
        "try:\n    load_bench_hf('picbench/no-such-bench')\n"
        "except PicbenchError as exc:\n    print('CLEAR', exc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "CLEAR" in out.stdout and "picbench/no-such-bench" in out.stdout and "offline" in out.stdout
