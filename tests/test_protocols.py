"""Protocols as recorded objects (issue 19, items 2 and 5): every run records the protocol its
numbers were computed under; regress, compare and leaderboard export refuse numbers of different or
unknown protocols unless told to; one run scores DreamBench under both identity protocols, each
equal to a run of that protocol alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from run_bench_helpers import write_tiny_bench
from typer.testing import CliRunner

from picbench.benches import default_detector
from picbench.cli import app
from picbench.errors import PicbenchError, ResultFormatError
from picbench.leaderboard import export_leaderboard, read_leaderboard
from picbench.protocols import (
    BENCH_PROTOCOLS,
    PROTOCOLS,
    ProtocolMismatchError,
    bench_protocol,
    differing_fields,
    label,
    metric_key,
    parse_identity_sets,
)
from picbench.results import RunResult, iter_sample_scores, load_result
from picbench.runner import RunConfig, run

WIDE = {"COLUMNS": "250"}
cli = CliRunner()
IDENTITY_METRICS = ("clip_i", "dino")


def _run(out: Path, data_dir: Path, bench: str = "dreambench", **kw) -> RunResult:
    config = dict(
        method="paste",
        bench=bench,
        out=out,
        seeds=(0,),
        limit=3,
        models="tiny",
        data_dir=data_dir,
        batch_size=2,
        detector=None,
        metrics=IDENTITY_METRICS,
    )
    outcome = run(RunConfig(**{**config, **kw}))
    assert outcome.result is not None
    return outcome.result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """Three DreamBench runs of the same items: both identity protocols in one pass, each alone."""
    root = tmp_path_factory.mktemp("protocol-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PICBENCH_HOME", str(tmp_path_factory.getbasetemp() / "picbench_home"))
        _run(root / "both", data_dir, identity_sets=("default", "references"))
        _run(root / "default", data_dir)
        _run(root / "references", data_dir, identity_sets=("references",))
    return {name: root / name for name in ("both", "default", "references")}


# -- item 5: both identity protocols in one run ---------------------------------------------------


def test_one_run_of_both_protocols_equals_a_run_of_each_alone(runs: dict[str, Path]) -> None:
    both, default, references = (load_result(runs[k]) for k in ("both", "default", "references"))
    keys = [k for k in default.metrics]
    assert keys and set(keys) == {"clip_i", "clip_i.single", "dino", "dino.single"}
    for key in keys:
        assert both.metrics[key] == default.metrics[key]
        assert both.metrics[metric_key(key, "references", "default")] == references.metrics[key]
        assert both.intervals[metric_key(key, "references", "default")] == references.intervals[key]
    # the two protocols really differ on DreamBench (one given image vs every photo of the subject)
    assert all(both.metrics[f"{m}@references"] != both.metrics[m] for m in IDENTITY_METRICS)
    # per item and per subject too, in samples.jsonl
    per_item = {k: {(s.sample_id, s.seed): s for s, _ in iter_sample_scores(runs[k])} for k in runs}
    assert len(per_item["both"]) == 3
    for item, score in per_item["both"].items():
        for m in IDENTITY_METRICS:
            assert score.metrics[m] == per_item["default"][item].metrics[m]
            assert score.metrics[f"{m}@references"] == per_item["references"][item].metrics[m]
            assert score.subjects[0].metrics[f"{m}@references"] == per_item["references"][item].subjects[0].metrics[m]
    # and the protocol records agree: the extra protocol of the joint run is the references run's protocol
    assert both.protocol == default.protocol and dict(both.extra_protocols[0]) == dict(references.protocol)
    assert differing_fields(default.protocol, references.protocol) == ["identity"]


def test_results_samples_csv_html_and_report_carry_the_protocol(runs: dict[str, Path], tmp_path: Path) -> None:
    both = load_result(runs["both"])
    protocol = both.protocol
    assert protocol is not None and protocol["name"] == "dreambooth/default+detector=none" and len(protocol["hash"]) == 12
    fields = protocol["fields"]
    assert fields["identity"] == "default" and fields["precision"] == "fp32" and fields["detector"] is None
    assert fields["encoders"]["clip"]["activation"] == "quick_gelu" and fields["encoders"]["clip"]["openai_weights"] is True
    assert {"weights_sha256", "preprocessing"} <= set(fields["encoders"]["dino"]) and "folder" not in fields["encoders"]["dino"]
    lines = [json.loads(line) for line in (runs["both"] / "samples.jsonl").read_text().splitlines()]
    assert {line["protocol"] for line in lines} == {label(protocol)}
    # the leaderboard CSV: name, hash, the extra protocol, the fields; read back as the same record
    csv = tmp_path / "board.csv"
    result = cli.invoke(app, ["leaderboard", "export", str(runs["both"]), "--out", str(csv)], env=WIDE)
    assert result.exit_code == 0, result.output
    row = read_leaderboard(csv).iloc[0]
    assert (row["protocol"], row["protocol_hash"]) == (protocol["name"], protocol["hash"])
    assert row["extra_protocols"] == label(both.extra_protocols[0]) and json.loads(row["protocol_fields"]) == fields
    assert "clip_i@references" in pd.read_csv(csv).columns
    # the HTML leaderboard and the report
    page = tmp_path / "board.html"
    assert cli.invoke(app, ["leaderboard", "export", str(runs["both"]), "--out", str(page), "--format", "html"]).exit_code == 0
    assert label(protocol) in page.read_text()
    report = tmp_path / "report.html"
    assert cli.invoke(app, ["report", str(runs["both"]), "--out", str(report)]).exit_code == 0
    text = report.read_text()
    head = text[: text.index("Aggregate metrics")]
    assert label(protocol) in head and label(both.extra_protocols[0]) in head
    assert "Spread between protocols" in head
    spread = abs(both.metrics["dino@references"] - both.metrics["dino"])
    assert f"{spread:.4f}" in head


def test_compare_shows_the_spread_between_protocols(runs: dict[str, Path]) -> None:
    result = cli.invoke(app, ["compare", str(runs["both"]), str(runs["default"]), "--resamples", "100"], env=WIDE)
    assert result.exit_code == 0, result.output
    both = load_result(runs["both"])
    assert "spread between the protocols" in result.output
    assert f"{abs(both.metrics['clip_i@references'] - both.metrics['clip_i']):.4f}" in result.output


# -- item 2: refusals -----------------------------------------------------------------------------


def test_regress_and_compare_refuse_a_reference_protocol_mismatch(runs: dict[str, Path]) -> None:
    default, references = str(runs["default"]), str(runs["references"])
    names = (label(load_result(runs["default"]).protocol), label(load_result(runs["references"]).protocol))
    for argv in (["regress", references, "--baseline", default], ["compare", references, default]):
        refused = cli.invoke(app, argv, env=WIDE)
        text = " ".join(refused.output.split())
        assert refused.exit_code == 2, text
        assert all(n in text for n in names) and "differ in identity" in text and "--allow-protocol-mismatch" in text
    allowed = cli.invoke(app, ["regress", references, "--baseline", default, "--allow-protocol-mismatch", "--show-all"], env=WIDE)
    assert allowed.exit_code in (0, 1), allowed.output
    assert "protocols" in allowed.output and "references" in allowed.output and "compared anyway" in allowed.output
    compared = cli.invoke(app, ["compare", references, default, "--allow-protocol-mismatch", "--resamples", "100"], env=WIDE)
    assert compared.exit_code == 0 and "compared anyway" in compared.output and names[0] in " ".join(compared.output.split())
    page = runs["default"].parent / "side-by-side.html"
    assert cli.invoke(app, ["report", references, default, "--out", str(page)]).exit_code == 0
    text = page.read_text()
    assert all(n in text for n in names) and "not all scored under one known protocol" in text


def test_regress_and_compare_refuse_a_detector_mismatch(tmp_path: Path, data_dir: Path) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=1)
    for detector in ("grounding-dino", "owlv2"):
        _run(tmp_path / detector, data_dir, bench=str(bench), limit=None, detector=detector, metrics=("clip_i", "iou"))
    a, b = load_result(tmp_path / "owlv2"), load_result(tmp_path / "grounding-dino")
    assert a.protocol["name"] == "picbench/default+detector=owlv2" and b.protocol["name"] == "picbench/default"
    fields = differing_fields(a.protocol, b.protocol)
    assert "detector.name" in fields and "detector.weights_sha256" in fields and "identity" not in fields
    assert b.protocol["fields"]["detector"]["query_mode"] == "all categories in one query"  # as the detector reports it
    for argv in (
        ["regress", str(tmp_path / "owlv2"), "--baseline", str(tmp_path / "grounding-dino")],
        ["compare", str(tmp_path / "owlv2"), str(tmp_path / "grounding-dino")],
    ):
        refused = cli.invoke(app, argv, env=WIDE)
        text = " ".join(refused.output.split())
        assert refused.exit_code == 2 and "detector.name" in text and label(a.protocol) in text and label(b.protocol) in text, text


def test_results_without_a_protocol_are_unknown_and_fail_closed(runs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(runs["default"], old)
    data = json.loads((old / "results.json").read_text())
    del data["protocol"]
    (old / "results.json").write_text(json.dumps(data))
    assert load_result(old).protocol is None
    for argv in (["regress", str(old), "--baseline", str(runs["default"])], ["compare", str(old), str(runs["default"])]):
        refused = cli.invoke(app, argv, env=WIDE)
        text = " ".join(refused.output.split())
        assert refused.exit_code == 2 and "protocol unknown" in text and "--allow-protocol-mismatch" in text, text
    allowed = cli.invoke(app, ["regress", str(old), "--baseline", str(runs["default"]), "--allow-protocol-mismatch"], env=WIDE)
    assert allowed.exit_code == 0, allowed.output


def test_leaderboard_export_refuses_mixed_protocols_of_one_bench(runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other-method"
    shutil.copytree(runs["references"], other)
    data = json.loads((other / "results.json").read_text())
    data["method"] = "paste-refs"  # a second row of the bench, scored under the references protocol
    (other / "results.json").write_text(json.dumps(data))
    with pytest.raises(ProtocolMismatchError, match="differ in identity"):
        export_leaderboard([runs["default"], other], tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
    refused = cli.invoke(app, ["leaderboard", "export", str(runs["default"]), str(other), "--out", str(tmp_path / "y.csv")], env=WIDE)
    assert refused.exit_code == 2 and not (tmp_path / "y.csv").exists()
    out = tmp_path / "z.csv"
    allowed = cli.invoke(
        app, ["leaderboard", "export", str(runs["default"]), str(other), "--out", str(out), "--allow-protocol-mismatch"], env=WIDE
    )
    assert allowed.exit_code == 0 and "labelled in the protocol column" in " ".join(allowed.output.split())
    assert set(read_leaderboard(out)["protocol"]) == {"dreambooth/default+detector=none", "dreambooth/references+detector=none"}


def test_ls_protocols_lists_every_protocol_with_its_fields() -> None:
    result = cli.invoke(app, ["ls", "protocols"], env=WIDE)
    assert result.exit_code == 0, result.output
    for protocol in PROTOCOLS.values():
        assert protocol.name in result.output
    for field in ("identity: default", "detector: grounding-dino", "precision: fp32", "QuickGELU", "clip weights", "crops"):
        assert field in result.output


def test_each_bench_declares_a_protocol_and_flags_are_checked() -> None:
    assert {bench_protocol(b).name for b in BENCH_PROTOCOLS} <= set(PROTOCOLS)
    assert bench_protocol("dreambench").name == "dreambooth" and bench_protocol("my-own.jsonl").name == "picbench"
    assert bench_protocol("positionic-open").detector == default_detector("positionic-open") == "vision-r1"
    assert parse_identity_sets("references, default") == ("references", "default")
    for bad in ("", "all", "default,everything"):
        with pytest.raises(PicbenchError, match="--protocols"):
            parse_identity_sets(bad)
    assert metric_key("clip_i.multi", "references", "default") == "clip_i@references.multi"
    assert metric_key("clip_i.multi", "default", "default") == "clip_i.multi"


def test_hostile_protocol_cells_are_named_not_crashed_on(tmp_path: Path) -> None:
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["x"] = {}
        node = node["x"]
    record = {"name": "n", "hash": "h", "fields": deep}
    assert differing_fields(record, {**record, "hash": "g", "fields": {}}) == ["x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x"]
    csv = tmp_path / "board.csv"
    csv.write_text(
        "method,bench,source,smoke,clip_i,protocol,protocol_hash,protocol_fields\nm,b,measured,false,0.5,p,h," + "[" * 100000 + "\n"
    )
    with pytest.raises(PicbenchError, match="board.csv:2: field 'protocol_fields' is not JSON"):
        from picbench.leaderboard import row_protocol

        row_protocol(read_leaderboard(csv).iloc[0].to_dict())


def test_a_malformed_protocol_in_results_is_named(runs: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(runs["default"], bad)
    data = json.loads((bad / "results.json").read_text())
    for key, value in (("protocol", {"name": 3}), ("extra_protocols", [None]), ("extra_protocols", {"name": "x"})):
        (bad / "results.json").write_text(json.dumps({**data, key: value}))
        with pytest.raises(ResultFormatError, match=rf"results\.json, field '{key}'"):
            load_result(bad)


def test_the_run_command_takes_protocols_and_precision(tmp_path: Path, data_dir: Path) -> None:
    """``--protocols references,default``: the references set gives the plain keys; ``--precision
    bf16`` is recorded in the protocol and its name."""
    out = tmp_path / "run"
    argv = ["run", "-m", "paste", "-b", "dreambench", "--limit", "1", "--models", "tiny", "--data-dir", str(data_dir)]
    argv += ["--detector", "none", "--metrics", "dino", "--out", str(out), "--protocols", "references,default", "--precision", "bf16"]
    result = cli.invoke(app, argv, env=WIDE)
    assert result.exit_code == 0, result.output
    done = load_result(out)
    assert done.protocol["name"] == "dreambooth/references+detector=none,precision=bf16" and done.protocol["fields"]["precision"] == "bf16"
    assert done.protocol["fields"]["encoders"]["dino"]["precision"] == "bf16"
    assert done.extra_protocols[0]["fields"]["identity"] == "default" and "dino@default" in done.metrics
    assert label(done.protocol) in " ".join(result.output.split())
    refused = cli.invoke(app, [*argv[:-4], "--protocols", "everything"], env=WIDE)
    assert refused.exit_code == 2 and "--protocols" in refused.output
