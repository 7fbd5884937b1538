"""Choosing samples: ``--split``, ``--samples ID,...|@FILE`` and ``--limit N`` (an even, seeded
share of each split); a run remembers the bench file it read, so ``report`` finds references and
boxes of a hand-made subset without ``--bench``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from run_bench_helpers import tiny_samples, write_tiny_bench
from typer.testing import CliRunner

from picbench.benches import load_bench
from picbench.benches.positionic import write_open
from picbench.cli import app
from picbench.errors import PicbenchError
from picbench.results import load_result
from picbench.selection import even_share, parse_sample_ids, select_samples

runner = CliRunner()


def test_limit_takes_an_even_seeded_share_of_each_split() -> None:
    samples = tiny_samples(20)  # 10 single, 10 multi, alternating
    four = select_samples(samples, bench="b", limit=4)
    assert sorted(s.split for s in four) == ["multi", "multi", "single", "single"]
    assert [s.id for s in four] == [s.id for s in samples if s in four], "bench order kept"
    assert select_samples(list(reversed(samples)), bench="b", limit=4) == list(reversed(four)), "the file's order does not matter"
    five = select_samples(samples, bench="b", limit=5)
    assert sorted(s.split for s in five).count("single") == 3, "the remainder goes to single first"
    assert set(s.id for s in four) <= set(s.id for s in select_samples(samples, bench="b", limit=6)), "a larger N extends a smaller N"
    assert even_share(samples, 4, seed=1) != four, "the draw depends on its seed"
    lopsided = [s for s in samples if s.split == "single"] + [s for s in samples if s.split == "multi"][:1]
    assert sorted(s.split for s in even_share(lopsided, 4)) == ["multi", "single", "single", "single"], "a short split gives its share away"
    assert len(select_samples(samples, bench="b", limit=100)) == 20


def test_split_and_samples_choose_and_bad_selections_are_refused_naming_them(tmp_path: Path) -> None:
    samples = tiny_samples(6)
    assert [s.id for s in select_samples(samples, bench="b", split="multi")] == ["m01", "m03", "m05"]
    assert [s.id for s in select_samples(samples, bench="b", ids=("m03", "s00"))] == ["s00", "m03"]
    assert [s.id for s in select_samples(samples, bench="b", ids=("m03", "s00"), split="single")] == ["s00"]
    with pytest.raises(PicbenchError, match=r"bench b has no sample 'nope', 'gone'; nothing was run"):
        select_samples(samples, bench="b", ids=("s00", "nope", "gone"))
    with pytest.raises(PicbenchError, match=r"--split multi and --samples \(1 id\(s\)\) holds no sample"):
        select_samples(samples, bench="b", ids=("s00",), split="multi")
    with pytest.raises(PicbenchError, match="--limit must be at least 1, got 0"):
        select_samples(samples, bench="b", limit=0)
    with pytest.raises(PicbenchError, match="--split must be one of single, multi"):
        select_samples(samples, bench="b", split="both")
    listing = tmp_path / "ids.txt"
    listing.write_text("# my subset\ns00\n\nm03\ns00\n")
    assert parse_sample_ids(f"@{listing}") == ("s00", "m03")
    assert parse_sample_ids(" s00, m01 ,") == ("s00", "m01")
    with pytest.raises(PicbenchError, match="cannot read"):
        parse_sample_ids(f"@{tmp_path / 'missing.txt'}")
    with pytest.raises(PicbenchError, match="names no sample id"):
        parse_sample_ids(" , ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--samples", "s00,zz9"], "has no sample 'zz9'; nothing was run"),
        (["--split", "multi", "--samples", "s00"], "holds no sample"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--limit", "-3"], "Invalid value for '--limit'"),
        (["--split", "pairs"], "--split must be one of single, multi"),
    ],
)
def test_bad_selections_exit_2_and_run_nothing(tmp_path: Path, data_dir: Path, args: list[str], message: str) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=2)
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--method", "paste", "--bench", str(bench), "--data-dir", str(data_dir), "--out", str(out), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not out.exists(), "nothing was run, no folder left behind"


def test_the_main_command_with_limit_4_scores_2_single_and_2_multi(tmp_path: Path, data_dir: Path) -> None:
    """The README's main command on the built positionic-open (paste stands in for positionic: the
    selection does not depend on the method; the output docs/cli.md shows is positionic's)."""
    write_open(data_dir, tmp_path / "positionic-open.jsonl")
    bench = load_bench(str(tmp_path / "positionic-open.jsonl"), data_dir)
    chosen = select_samples(bench.samples, bench=bench.name, limit=4)
    assert sorted(s.split for s in chosen) == ["multi", "multi", "single", "single"]
    assert any(len(s.subjects) > 1 and len({sub.depth for sub in s.subjects}) > 1 for s in chosen), "a depth-ordered layout is shown"
    out = tmp_path / "run"
    args = ["run", "--method", "paste", "--bench", str(tmp_path / "positionic-open.jsonl"), "--models", "tiny", "--limit", "4"]
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir), "--out", str(out), "--detector", "none"])
    assert result.exit_code == 0, result.output
    coverage = load_result(out).coverage
    assert coverage is not None and {k: (c.expected, c.scored) for k, c in coverage.splits.items()} == {"single": (2, 2), "multi": (2, 2)}
    assert "scored 4 of 4 item(s) (single: scored 2 of 2; multi: scored 2 of 2)" in " ".join(result.output.split())
    scored = [json.loads(line)["sample_id"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert scored == [s.id for s in chosen]


def test_report_of_a_hand_made_subset_finds_references_and_boxes_without_bench(tmp_path: Path, data_dir: Path) -> None:
    subset = write_tiny_bench(tmp_path / "mine", data_dir, samples=tiny_samples(4)[1:3], name="my-subset")
    out = tmp_path / "run"
    common = ["--data-dir", str(data_dir), "--models", "tiny", "--detector", "none", "--out", str(out)]
    assert runner.invoke(app, ["run", "--method", "paste", "--bench", str(subset), *common]).exit_code == 0
    recorded = load_result(out).provenance["bench"]["file"]
    assert recorded["path"] == str(subset.resolve()) and len(recorded["sha256"]) == 64
    page_path = tmp_path / "report.html"
    shown = runner.invoke(app, ["report", str(out), "--out", str(page_path)])
    assert shown.exit_code == 0, shown.output
    page = page_path.read_text()
    assert len(re.findall(r'class="ref"', page)) == 3, "the references of 1 + 2 subjects"
    assert page.count(": target</title>") == 3 and "warning:" not in page
    subset.write_text(subset.read_text().replace("a dog on the grass", "a dog on the sofa"))  # the file changed since the run
    runner.invoke(app, ["report", str(out), "--out", str(page_path)])
    changed = page_path.read_text()
    assert (
        "has changed since the run (its sha256 differs)" in changed and 'class="ref"' not in changed and ": target</title>" not in changed
    )


def test_a_merge_takes_the_same_selection(tmp_path: Path, data_dir: Path) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=6)
    out = tmp_path / "run"
    common = ["--bench", str(bench), "--data-dir", str(data_dir), "--models", "tiny", "--detector", "none", "--out", str(out)]
    for part in ("0/2", "1/2"):
        shard = runner.invoke(app, ["run", "--method", "paste", "--split", "multi", "--limit", "2", "--shard", part, *common, "--json"])
        assert shard.exit_code == 0 and json.loads(shard.stdout) == {
            "out": str(out),
            "shard": part,
            "results": None,
            "merge": f"picbench merge {out}",
        }
    merged = runner.invoke(app, ["merge", str(out)])
    assert merged.exit_code == 0, merged.output
    result = load_result(out)
    assert result.coverage is not None and result.coverage.expected == 2 and set(result.coverage.splits) == {"multi"}
    assert result.provenance["bench"]["split"] == "multi" and result.provenance["bench"]["limit"] == 2


def test_a_recorded_bench_file_that_is_not_a_regular_jsonl_file_is_not_read(tmp_path: Path, data_dir: Path) -> None:
    subset = write_tiny_bench(tmp_path, data_dir, n=2)
    out = tmp_path / "run"
    common = ["--data-dir", str(data_dir), "--models", "tiny", "--detector", "none", "--out", str(out)]
    assert runner.invoke(app, ["run", "--method", "paste", "--bench", str(subset), *common]).exit_code == 0
    results = out / "results.json"
    for hostile in ("/dev/zero", str(tmp_path)):  # reading /dev/zero would never end
        data = json.loads(results.read_text())
        data["provenance"]["bench"]["file"]["path"] = hostile
        results.write_text(json.dumps(data))
        shown = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.html")])
        assert shown.exit_code == 0 and "is not a .jsonl file here" in (tmp_path / "r.html").read_text()
