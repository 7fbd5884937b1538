"""`picbench weights download`: without the Hub. A hub in miniature on 127.0.0.1 (tests/hub_server.py,
reached through HF_ENDPOINT) serves tiny random-weight models in the released layouts plus files no
loader reads; the command lists them with sizes, fetches exactly what the loaders read into the
--weights-dir layout, and an offline run then reads them there. Offline, unreachable and unknown
repositories fail with exit 2 and a message that says what to do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import repo_files, serving
from run_bench_helpers import tiny_samples, write_tiny_bench
from typer.testing import CliRunner

from picbench.checkpoints import local_checkpoint
from picbench.cli import app
from picbench.methods import METHODS
from picbench.metrics.weights import CLIP, DINO
from picbench.results import load_result

REPO = Path(__file__).resolve().parents[1]
GLIGEN = "anhnct/Gligen_Text_Image"
# files the released repositories also hold that no picbench loader reads: never fetched
DECOYS = {
    GLIGEN: {"unet/diffusion_pytorch_model.fp16.safetensors": b"half", "safety_checker/model.safetensors": b"nsfw", "gligen.ckpt": b"1"},
    CLIP.hub_id: {"open_clip_pytorch_model.bin": b"bin", "model.safetensors": b"timm copy"},
    DINO.hub_id: {"pytorch_model.bin": b"bin"},
}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from picbench.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}, "COLUMNS": "200", **env},
    )


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """Repository id -> files: GLIGEN's tiny diffusers folder and the tiny CLIP and DINO folders, each with its decoys."""
    from picbench.adapters.gligen import build_tiny_gligen
    from picbench.tiny.metric_models import tiny_weights

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PICBENCH_HOME", str(tmp_path_factory.getbasetemp() / "picbench_home"))
        folders = {
            GLIGEN: build_tiny_gligen(tmp_path_factory.mktemp("gligen") / "Gligen_Text_Image", "text-image"),
            CLIP.hub_id: tiny_weights("clip"),
            DINO.hub_id: tiny_weights("dino"),
        }
    return {repo: {**repo_files(folder), **DECOYS[repo]} for repo, folder in folders.items()}


@pytest.mark.slow
def test_download_lists_sizes_fetches_what_runs_read_and_an_offline_run_uses_it(
    released: dict[str, dict[str, bytes]], tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "weights"
    args = ["weights", "download", "gligen", "--metrics", "--detector", "none", "--weights-dir", str(weights)]
    with serving(released) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home")}
        done = _cli(args, env)
        assert done.returncode == 0, done.stderr[-3000:]
        wanted = {f"{repo}/{name}": data for repo, files in released.items() for name, data in files.items() if name not in DECOYS[repo]}
        assert sorted(hub.fetched()) == sorted(wanted)  # every file a loader reads, and no decoy
        sizes = re.findall(r"│ (\S+) +│ (\S+) +│ +([\d.]+ [KMG]?B) │ to fetch", done.stdout)
        assert {f"{repo}/{name}" for repo, name, _ in sizes} == set(wanted)  # listed, with sizes, before fetching
        assert f"{len(wanted)} of {len(wanted)} file(s) to fetch" in done.stdout
        for repo in (GLIGEN, CLIP.hub_id, DINO.hub_id):  # one layout: DIR/<hub id>/
            for name, data in released[repo].items():
                local = weights / repo / name
                assert (local.read_bytes() == data) if name not in DECOYS[repo] else not local.exists(), local
        assert local_checkpoint(GLIGEN, weights) == weights / GLIGEN  # where a run looks
        fetched_before = len(hub.fetched())
        again = _cli(args, env)
        assert again.returncode == 0 and f"0 of {len(wanted)} file(s) to fetch" in again.stdout, again.stdout
        assert len(hub.fetched()) == fetched_before  # nothing fetched twice
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.delenv("PICBENCH_WEIGHTS_DIR", raising=False)  # --weights-dir serves the metric models too
    bench = write_tiny_bench(tmp_path, data_dir, samples=tiny_samples(2)[:1])
    run = [
        "run", "--method", "gligen", "--bench", str(bench), "--data-dir", str(data_dir), "--weights-dir", str(weights),
        "--detector", "none", "--param", "steps=2", "--param", "resolution=32", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    result = CliRunner().invoke(app, run)
    assert result.exit_code == 0, result.output
    scored = load_result(tmp_path / "run")
    assert scored.counts["generation_failures"] == 0 and scored.metrics["clip_i"] is not None and not scored.smoke


def test_offline_the_hub_is_not_asked_and_the_error_says_what_to_do(tmp_path: Path) -> None:
    with serving({GLIGEN: {"model_index.json": b"{}"}}) as hub:
        done = _cli(
            ["weights", "download", "gligen", "--weights-dir", str(tmp_path / "w")], {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1"}
        )
        assert hub.requests == []
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert f"{GLIGEN}: HF_HUB_OFFLINE is set" in message and "nothing of it was downloaded" in message
    assert not (tmp_path / "w").exists()


def test_an_unreachable_hub_and_an_unknown_repository_exit_2_naming_the_repository(tmp_path: Path) -> None:
    with serving({}) as hub:
        unknown = _cli(
            ["weights", "download", "gligen", "--param", "checkpoint=someone/absent", "--weights-dir", str(tmp_path / "w")],
            {"HF_ENDPOINT": hub.url, "HF_HUB_ETAG_TIMEOUT": "5"},
        )
        closed = hub.url
    assert unknown.returncode == 2 and "someone/absent was not found on the hub" in " ".join(unknown.stderr.split()), unknown.stderr
    down = _cli(["weights", "download", "gligen", "--weights-dir", str(tmp_path / "w")], {"HF_ENDPOINT": closed})
    assert down.returncode == 2 and f"{GLIGEN}: the hub could not be reached" in " ".join(down.stderr.split()), down.stderr


def test_what_is_refused_before_asking_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PICBENCH_WEIGHTS_DIR", raising=False)
    runner = CliRunner()
    for args, message in (
        (["paste", "--weights-dir", str(tmp_path)], "method paste loads no weights"),
        (["--weights-dir", str(tmp_path)], "name at least one method"),
        (["gligen"], "give --weights-dir DIR (or set PICBENCH_WEIGHTS_DIR)"),
        (["gligen", "--param", "variant=nope", "--weights-dir", str(tmp_path)], "variant"),
        (["nomethod", "--weights-dir", str(tmp_path)], "nomethod"),
    ):
        result = runner.invoke(app, ["weights", "download", *args], env={"COLUMNS": "200"})
        assert result.exit_code == 2 and message in result.output, (args, result.output)


@pytest.mark.parametrize("name", ["dreamo", "gligen", "instancediffusion", "msdiffusion", "positionic", "uno"])
def test_every_checkpoint_a_method_names_is_downloaded_where_it_looks(name: str, tmp_path: Path) -> None:
    """Each hub repository in a method's `checkpoints` is among its downloads, and each download
    lands where local_checkpoint looks for that repository."""
    variants = [{"variant": "text-image"}, {"variant": "text-box"}] if name == "gligen" else [{}]  # one checkpoint a variant
    downloads = [d for params in variants for d in METHODS.get(name)(params=params).downloads()]
    method = METHODS.get(name)()
    named = {m.group(0) for value in method.checkpoints.values() if (m := re.match(r"[\w.-]+/[\w.-]+", value))}
    assert named and named <= {d.repo for d in downloads}
    for d in downloads:
        (tmp_path / d.target).mkdir(parents=True, exist_ok=True)
        assert local_checkpoint(d.repo, tmp_path) == tmp_path / d.repo


def test_every_hint_names_a_command_that_exists() -> None:
    """huggingface_hub 2.x has no `huggingface-cli`: hints name `hf download` (or picbench's own command)."""
    found = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "grep",
            "--untracked",
            "-l",
            "huggingface-cli",
            "--",
            "*.py",
            "*.md",
            "*.toml",
            "*.sh",
            "*.yml",
            f":!{Path(__file__).relative_to(REPO)}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 1 and found.stdout == "", found.stdout  # git grep: 1 = no match
