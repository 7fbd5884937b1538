"""BMPDS: the filter on injected scores, the config checks, the stages' failure rules, and whole
builds with tiny random-weight models of the real architectures (SAM, FLUX Fill, FLUX, Qwen2, UNO,
Grounding DINO, CLIP, DINO) on real DreamBench and MS-Bench subjects, including a SIGKILL and resume."""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from holding import cli_holding_after, wait_until_held
from PIL import Image

from picbench.atomic import _HOST
from picbench.errors import ConfigError
from picbench.pairs import read_pairs, reference_paths, target_path, validate_pairs
from picbench.reference_impl.bmpds import build, load_config, plan, subject_pool
from picbench.reference_impl.bmpds.config import FilterCfg
from picbench.reference_impl.bmpds.filter import Candidate, decide
from picbench.reference_impl.bmpds.stages import UnitFailure, best_detection, checked_image, cut_out, place
from picbench.reference_impl.bmpds.store import BmpdsStore

CLI = [sys.executable, "-c", "from picbench.cli import main; main()"]
TINY = """
name = "bmpds-tiny"
seed = {seed}
size = 64
models = "tiny"
[sources]
subjects = {sources}
[stages]
single = {single}
forward = {forward}
backward = {backward}
[roles]
steps = 2
fill_steps = 2
detector_threshold = 0.0
caption_lm = true
subject_params = {{steps = 2}}
[filter]
keep_top = 0.5
"""


def _config(
    tmp_path: Path,
    name: str = "tiny.toml",
    *,
    seed: int = 0,
    sources: str = '["dreambench", "msbench"]',
    single: int = 3,
    forward: int = 1,
    backward: int = 1,
) -> Path:
    path = tmp_path / name
    path.write_text(TINY.format(seed=seed, sources=sources, single=single, forward=forward, backward=backward))
    return path


def _files(folder: Path) -> dict[str, bytes]:
    skip = {"store.sqlite", "store.sqlite-wal", "store.sqlite-shm"}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip and not p.name.endswith(".lock") and not p.name.startswith(".lock-")
    }


# -- the filter -----------------------------------------------------------------------------------


def test_filter_keeps_exactly_the_top_fraction_and_says_why() -> None:
    rng = random.Random(7)
    cands = [
        Candidate(f"s{i:02d}", "single", clip_i=[rng.uniform(0.6, 1)], dino=[rng.uniform(0.5, 1)], vlm=[1.0], clip_t=rng.uniform(0.1, 0.4))
        for i in range(40)
    ]
    cands += [
        Candidate(
            f"m{i:02d}",
            "forward",
            clip_i=[0.9, rng.uniform(0.6, 1)],
            dino=[0.9, 0.9],
            vlm=[0.75, rng.choice([0.25, 1.0, None])],
            clip_t=rng.uniform(0.1, 0.4),
        )
        for i in range(20)
    ]
    cands += [Candidate("f0", "backward", failure="detector found no 'dog' in the rendered caption")]
    cfg = FilterCfg(clip_i=0.7, dino=0.6, vlm=0.5, use_vlm=True, keep_top=0.3)
    verdicts = decide(cands, cfg)
    assert set(verdicts) == {c.key for c in cands}
    for stage in ("single", "forward"):
        group = [c for c in cands if c.stage == stage]
        passed = [
            c
            for c in group
            if min(c.clip_i) >= cfg.clip_i and min(c.dino) >= cfg.dino and all(v is not None and v >= cfg.vlm for v in c.vlm)
        ]
        kept = [c for c in group if verdicts[c.key].status == "kept"]
        assert len(kept) == math.floor(cfg.keep_top * len(passed)) > 0
        assert {c.key for c in kept} == {c.key for c in sorted(passed, key=lambda c: -c.clip_t)[: len(kept)]}
        for c in group:
            v = verdicts[c.key]
            if v.status == "kept":
                continue
            assert v.status == "dropped" and v.reason
            if min(c.clip_i) < cfg.clip_i:
                assert v.level == "s_v" and "clip_i" in v.reason
            elif min(c.dino) < cfg.dino:
                assert v.level == "s_v" and "dino" in v.reason
            elif c in passed:
                assert v.level == "caption_rank" and "below the top 0.3" in v.reason
            else:
                assert v.level == "s_vlm" and ("could not be computed" in v.reason or "< 0.5" in v.reason)
    assert verdicts["f0"].to_dict() == {
        "status": "failed",
        "level": "generation",
        "reason": "detector found no 'dog' in the rendered caption",
    }


def test_filter_without_vlm_ignores_vlm_and_keeps_at_least_one() -> None:
    cands = [Candidate("a", "single", [0.9], [0.9], [None], 0.2), Candidate("b", "single", [0.9], [0.9], [], 0.3)]
    verdicts = decide(cands, FilterCfg(keep_top=0.1))
    assert verdicts["b"].status == "kept" and verdicts["a"].level == "caption_rank"


# -- the config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("seeds = 1", "seeds"),
        ("[stages]\nsingle = 'x'", "stages.single"),
        ("[filter]\nkeep_top = 0.0", "filter.keep_top"),
        ("[filter]\nkeeptop = 0.5", "filter.keeptop"),
        ("[stages]\nsingle = 0\nforward = 2", "stages.forward"),
        ("size = 100", "size"),
        ("[sources]\nsubjects = ['coco']", "sources.subjects"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.field == field and str(path) in str(err.value)


def test_model_defaults_are_the_diffusers_pipelines_defaults() -> None:
    import inspect

    from diffusers import FluxFillPipeline, FluxPipeline

    from picbench.reference_impl.bmpds.config import RoleSettings

    fill, flux = (inspect.signature(p.__call__).parameters for p in (FluxFillPipeline, FluxPipeline))
    m = RoleSettings()
    assert (m.fill_steps, m.fill_guidance) == (fill["num_inference_steps"].default, fill["guidance_scale"].default) == (50, 30.0)
    assert (m.steps, m.render_guidance) == (flux["num_inference_steps"].default, flux["guidance_scale"].default) == (28, 3.5)
    assert m.max_sequence_length == fill["max_sequence_length"].default == flux["max_sequence_length"].default == 512


def test_plan_is_seeded_and_keyed(tmp_path: Path) -> None:
    a, b = plan(load_config(_config(tmp_path))), plan(load_config(_config(tmp_path, "b.toml", seed=1)))
    assert [u.name for u in a["single"]] == ["single-00000", "single-00001", "single-00002"]
    assert {u.key for s in a.values() for u in s}.isdisjoint({u.key for s in b.values() for u in s})
    assert a == plan(load_config(_config(tmp_path)))


def test_subject_pool_holds_real_dreambench_and_msbench_subjects(data_dir: Path) -> None:
    pool = subject_pool(data_dir, ("dreambench", "msbench"))
    sources = {s.source for s in pool}
    assert sources == {"dreambench", "msbench"} and len([s for s in pool if s.source == "dreambench"]) == 30
    assert all((data_dir / s.reference).is_file() and s.contexts for s in pool)
    assert not any(s.name.endswith("cat1") for s in pool)  # its image is missing from the snapshot


# -- the stages' rules ------------------------------------------------------------------------------


def test_bad_model_outputs_are_unit_failures() -> None:
    with pytest.raises(UnitFailure, match="shape"):
        checked_image(np.zeros((32, 64, 3)), 64, "the outpainter")
    nan = np.zeros((64, 64, 3))
    nan[3, 3, 0] = np.nan
    with pytest.raises(UnitFailure, match="non-finite"):
        checked_image(nan, 64, "the outpainter")
    with pytest.raises(UnitFailure, match="segmenter found no subject"):
        cut_out(Image.new("RGB", (64, 64)), np.zeros((64, 64), bool))
    from picbench.metrics.detectors.base import Detection, DetectorOutput

    with pytest.raises(UnitFailure, match="found no 'dog'"):
        best_detection(DetectorOutput((Detection((0, 0, 5, 5), "cat", 0.9),)), "dog", "render")
    assert best_detection(DetectorOutput((Detection((0, 0, 5, 5), "dog", 0.2), Detection((1, 1, 9, 9), "dog", 0.8))), "dog", "render") == (
        1,
        1,
        9,
        9,
    )


def test_place_pastes_back_to_front_and_masks_the_subjects() -> None:
    red, blue = Image.new("RGBA", (10, 10), (255, 0, 0, 255)), Image.new("RGBA", (10, 10), (0, 0, 255, 255))
    canvas, mask, boxes = place([red, blue], [(0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)], [1, 0], 64)
    assert canvas.getpixel((20, 20)) == (0, 0, 255)  # the overlap shows the front (depth 0) subject
    assert canvas.getpixel((5, 5)) == (255, 0, 0) and canvas.getpixel((60, 60)) == (127, 127, 127)
    assert mask.getpixel((20, 20)) == 0 and mask.getpixel((60, 60)) == 255  # white = repaint
    assert boxes == [(0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)]


# -- whole builds with tiny models ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def msbench_build(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """One tiny build of every stage on MS-Bench subjects: (config file, build folder, outcome)."""
    folder = tmp_path_factory.mktemp("bmpds")
    config = _config(folder, sources='["msbench"]')
    out = folder / "build"
    return config, out, build(load_config(config), out, data_dir)


def test_every_stage_end_to_end_on_msbench_subjects(
    msbench_build: tuple[Path, Path, object], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file, out, outcome = msbench_build
    config = load_config(config_file)
    assert outcome.ran == {"single": 3, "forward": 1, "backward": 1} and outcome.failed == {"single": 0, "forward": 0, "backward": 0}
    report = validate_pairs(out)
    assert report.ok, [p.message for p in report.errors]
    pairs = read_pairs(out)
    by_stage = {s.meta["bmpds"]["stage"]: s for s in pairs.samples}
    assert [s.meta["bmpds"]["stage"] for s in pairs.samples].count("single") == 1  # floor(0.5 * 3)
    assert set(by_stage) == {"single", "forward", "backward"}
    single, forward, backward = by_stage["single"], by_stage["forward"], by_stage["backward"]
    assert single.meta["bmpds"]["source"]["from"] == "msbench"
    ref = reference_paths(pairs, single)[0]
    assert ref.read_bytes() == (data_dir / single.subjects[0].references[0]).read_bytes()  # the real reference, copied
    assert len(forward.subjects) >= 2 and sorted(s.depth for s in forward.subjects) == list(range(len(forward.subjects)))
    for ref in reference_paths(pairs, backward):  # re-rendered, not crops of the target
        assert ref.is_relative_to(out / "images") and ref.name.startswith("reference-")
    assert backward.meta["bmpds"]["caption"]["source"] == "template"  # the random LM names no subject: seeded fallback
    for sample in pairs.samples:
        with Image.open(target_path(pairs, sample)) as im:
            assert im.size == (64, 64)
        meta = sample.meta["bmpds"]
        assert meta["filter"]["status"] == "kept" and set(meta["scores"]) >= {"clip_i", "dino", "clip_t"}
        assert all(v["weights_sha256"] for k, v in meta["models"].items() if isinstance(v, dict) and "weights_sha256" in v)
    # a rerun computes nothing and loads no generative model
    from picbench.reference_impl.bmpds import roles

    for cls in (roles.Segmenter, roles.Outpainter, roles.Renderer):
        monkeypatch.setattr(cls, "__init__", lambda *a, **k: pytest.fail("a finished build loaded a model"))
    before = (out / "pairs.jsonl").read_bytes()
    again = build(config, out, data_dir)
    assert again.ran == {"single": 0, "forward": 0, "backward": 0} and again.reused == {"single": 3, "forward": 1, "backward": 1}
    assert (out / "pairs.jsonl").read_bytes() == before
    with BmpdsStore(out) as store:
        assert set(store.unit_writes().values()) == {1}


def _units_done(out: Path) -> int:
    try:
        with sqlite3.connect(out / "store.sqlite", timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM bmpds_units").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_then_the_same_command_ends_as_an_uninterrupted_build(tmp_path: Path, data_dir: Path) -> None:
    config = _config(tmp_path, sources='["dreambench"]')
    full, killed = tmp_path / "full", tmp_path / "killed"
    command = [*CLI, "data", "build", "bmpds", str(config), "--data-dir", str(data_dir), "--out"]
    subprocess.run([*command, str(full)], check=True, capture_output=True, timeout=600)
    marker = tmp_path / "held"
    held = [*cli_holding_after("picbench.reference_impl.bmpds.store:BmpdsStore.put_unit", 2, marker), *command[3:]]
    proc = subprocess.Popen([*held, str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_held(proc, marker)  # two units stored, the third computed and waiting to be stored
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the build ended before it could be killed"
    done_before = _units_done(killed)
    assert done_before == 2 and not (killed / "pairs.jsonl").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    nested = [p.parent for p in (killed / "images").rglob("*.png")][0]
    stale = [
        nested / f".target.png.{_HOST}-{dead.stdout.strip()}.k2.tmp",
        killed / "dreambench" / f".00.jpg.{_HOST}-{dead.stdout.strip()}.x9.tmp",
    ]
    for path in stale:  # what writers killed mid-write leave in nested folders
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    rerun = subprocess.run([*command, str(killed)], capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"single {3 - min(done_before, 3)} ({min(done_before, 3)} reused)" in rerun.stdout
    with BmpdsStore(killed) as store:
        assert set(store.unit_writes().values()) == {1}, "a finished unit was computed again"
    assert _files(killed) == _files(full)


def test_stats_and_report_of_a_build(msbench_build: tuple[Path, Path, object], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from picbench.cli import app

    _, out, _ = msbench_build
    shown = CliRunner().invoke(app, ["data", "stats", str(out)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "bmpds-tiny: 3 pairs (multi 2, single 1)" in shown.output and "caption_rank 2" in shown.output
    assert "clip_t (n=5):" in shown.output and "clip_i (n=" in shown.output
    page = CliRunner().invoke(app, ["data", "report", str(out), "--out", str(tmp_path / "pairs.html")])
    assert page.exit_code == 0, page.output
    html = (tmp_path / "pairs.html").read_text()
    assert "SMOKE BUILD" in html and html.count('<figure class="card">') == 3 and html.count("<rect") == 5
    assert "http" not in html.replace("http://www.w3.org", "")  # nothing fetched
    from picbench.pairs import load_pairs_hf, save_pairs_hf

    save_pairs_hf(read_pairs(out), tmp_path / "hf")
    back = load_pairs_hf(tmp_path / "hf", tmp_path / "back")
    assert back.samples == read_pairs(out).samples
    assert all((tmp_path / "back" / rel).read_bytes() == (out / rel).read_bytes() for rel in back.image_paths())


def test_a_vlm_answer_that_does_not_parse_drops_the_pair_with_its_reason(tmp_path: Path, data_dir: Path) -> None:
    """s_vlm with the tiny Qwen2.5-VL: its random answers hold no grade, so every pair is dropped
    at s_vlm naming the unparseable answer; the build finishes and stats count them."""
    from picbench.pairs.stats import pair_stats

    text = _config(tmp_path, sources='["dreambench"]', single=2, forward=0, backward=0).read_text()
    config = tmp_path / "vlm.toml"
    config.write_text(text.replace("keep_top = 0.5", "keep_top = 1.0\nuse_vlm = true"))
    outcome = build(load_config(config), tmp_path / "b", data_dir)
    assert [v.level for v in outcome.verdicts.values()] == ["s_vlm", "s_vlm"]
    assert all("judge answer unparseable" in v.reason for v in outcome.verdicts.values())
    stats = pair_stats(tmp_path / "b")
    assert stats.n_pairs == 0 and stats.levels == {"s_vlm": 2} and stats.stages == {"single": {"dropped": 2}}


def test_the_built_pair_set_trains_with_the_trainers_tiny_config(msbench_build: tuple[Path, Path, object], tmp_path: Path) -> None:
    """BMPDS's output is the trainer's input, unchanged: the shipped tiny config, pointed at it."""
    import json

    from picbench.reference_impl.training import CONFIG_DIR
    from picbench.reference_impl.training import load_config as load_train_config
    from picbench.reference_impl.training.loop import Trainer

    _, out, _ = msbench_build
    text = (CONFIG_DIR / "tiny.toml").read_text()
    text = text.replace('"../../../pairs/paste-pairs"', json.dumps(str(out))).replace(
        '"../../../runs/train/tiny"', json.dumps(str(tmp_path / "run"))
    )
    text = text.replace("steps = 4\n", "steps = 2\n").replace("steps = 8\n", "steps = 2\n")
    (tmp_path / "train.toml").write_text(text)
    result = Trainer(load_train_config(tmp_path / "train.toml"), progress=False).run()
    assert result.global_step == 4 and not result.skipped and result.lora.is_file()


@pytest.mark.slow
def test_two_ranks_under_torchrun_equal_one_process(tmp_path: Path, data_dir: Path) -> None:
    """Each rank builds its share of every stage into the one store; the files equal a single
    process's, bit for bit at the same thread count (torchrun sets OMP_NUM_THREADS=1; across
    thread counts float sums differ and pixels by at most 1)."""
    config = _config(tmp_path, sources='["dreambench"]', single=2, forward=1, backward=1)
    args = ["data", "build", "bmpds", str(config), "--data-dir", str(data_dir), "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*CLI, *args, str(tmp_path / "one")], check=True, capture_output=True, timeout=600, env=env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python", *CLI]
    two = subprocess.run([*torchrun, *args, str(tmp_path / "two")], capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    with sqlite3.connect(tmp_path / "two" / "store.sqlite") as db:
        assert db.execute("SELECT COUNT(DISTINCT pid) FROM bmpds_units").fetchone()[0] == 2, "each rank built its own share"
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


def test_missing_weights_fail_before_any_unit_naming_the_model(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from picbench.errors import MissingWeightsError

    text = _config(tmp_path).read_text().replace('models = "tiny"', 'models = "tiny"\n[weights]\nsegmenter = "/nowhere/sam"\n')
    config = tmp_path / "missing.toml"
    config.write_text(text)
    with pytest.raises(MissingWeightsError, match="segmenter model 'facebook/sam-vit-huge'"):
        build(load_config(config), tmp_path / "b", data_dir)
    with BmpdsStore(tmp_path / "b") as store:
        assert store.unit_writes() == {}, "nothing ran"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PICBENCH_WEIGHTS_DIR", raising=False)
    from picbench.reference_impl.bmpds.roles import model_folder

    with pytest.raises(MissingWeightsError, match="outpainter model 'black-forest-labs/FLUX.1-Fill-dev'.*HF_HUB_OFFLINE"):
        model_folder("outpainter", "default", {})


def test_a_subject_the_segmenter_cannot_find_is_recorded_and_the_build_goes_on(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from picbench.pairs.stats import pair_stats
    from picbench.reference_impl.bmpds import roles

    calls = []

    def first_finds_nothing(self, image, box):  # type: ignore[no-untyped-def]
        calls.append(box)
        return np.zeros((image.height, image.width), bool) if len(calls) == 1 else np.ones((image.height, image.width), bool)

    monkeypatch.setattr(roles.Segmenter, "segment", first_finds_nothing)
    config = _config(tmp_path, sources='["dreambench"]', single=2, forward=1, backward=0)
    outcome = build(load_config(config), tmp_path / "b", data_dir)
    failed = {k: v for k, v in outcome.verdicts.items() if v.status == "failed"}
    assert outcome.failed == {"single": 1, "forward": 1, "backward": 0} and len(failed) == 2
    reasons = sorted(v.reason for v in failed.values())
    assert reasons[0].startswith("segmenter found no subject in the box") and "single-00000 gave no pair" in reasons[1]
    assert len(read_pairs(tmp_path / "b")) == 1  # the other single pair is built, scored and kept
    stats = pair_stats(tmp_path / "b")
    assert stats.levels == {"generation": 2} and stats.stages["single"] == {"failed": 1, "kept": 1}
    assert sum(stats.reasons.values()) == 2
