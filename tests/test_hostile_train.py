"""Training, data building and comparison under careless and hostile input (issue 23): one test or
more per class of the issue, each asserting the message, the exit code and that finished work is
kept. Tiny random-weight FLUX on CPU, real paste-pairs; signals come from the loop's own step hook
(``tests/train_driver.py``), never from timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_bench_helpers import tiny_samples, write_tiny_bench
from safetensors.torch import load_file
from train_helpers import tiny_config
from typer.testing import CliRunner

from picbench.atomic import current_umask
from picbench.cli import app
from picbench.reference_impl.training import load_config
from picbench.reference_impl.training import loop as training_loop
from picbench.reference_impl.training.loop import Trainer, TrainingDiverged, TrainingInterrupted

runner = CliRunner()
DRIVER = Path(__file__).parent / "train_driver.py"
LORA = "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    from picbench.pairs.paste import build_paste_pairs

    out = tmp_path_factory.mktemp("pairs") / "paste-pairs"
    build_paste_pairs(data_dir, out, seed=0, n_multi=4, n_single=2)
    return out


def _config(folder: Path, pairs: Path, **tables: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return tiny_config(folder, pairs, **tables)


def _stop_at(path: Path, step: int, signum: int = signal.SIGTERM) -> Path:
    """Train in this process until `step`, then send the signal; returns the checkpoint folder."""

    def hook(record: dict) -> None:
        if record["step"] == step:
            os.kill(os.getpid(), signum)

    with pytest.raises(TrainingInterrupted) as stopped:
        Trainer(load_config(path), progress=False, on_step=hook).run()
    assert stopped.value.exit_code == (143 if signum == signal.SIGTERM else 130)
    out = path.parent / "run"
    assert (out / "checkpoints" / "latest").read_text() == f"step-{step:07d}"
    return out / "checkpoints" / f"step-{step:07d}"


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory, pairs: Path) -> Path:
    """A training folder stopped by SIGTERM after step 2 (its config in `train.toml`), trained once
    for every test that only damages or changes it: use it through :func:`_copy_of`."""
    root = tmp_path_factory.mktemp("stopped")
    _stop_at(_config(root, pairs, checkpoint={"every": 100}), 2)
    return root


def _copy_of(stopped: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(config, checkpoint folder of step 2) of a private copy of the `stopped` training folder."""
    root = tmp_path / "copy"
    shutil.copytree(stopped, root)
    config = root / "train.toml"
    config.write_text(config.read_text().replace(json.dumps(str(stopped / "run")), json.dumps(str(root / "run"))))
    return config, root / "run" / "checkpoints" / "step-0000002"


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args], env={"COLUMNS": "300"})
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _same_lora(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x)


# -- 1. security: a checkpoint never runs code ------------------------------------------------------


class _Payload:
    """Pickles as a call to open(marker, "w"): loading it with weights_only=False creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_pickle_payload_in_a_checkpoint_never_runs(tmp_path: Path, stopped: Path) -> None:
    live = tmp_path / "live.pt"
    torch.save({"state": {0: _Payload(tmp_path / "proof")}, "param_groups": []}, live)
    torch.load(live, weights_only=False)  # the payload is real: an unsafe load runs it
    assert (tmp_path / "proof").exists()

    path, folder = _copy_of(stopped, tmp_path)
    state_before = (folder / "state.json").read_bytes()
    marker = tmp_path / "payload-ran"
    torch.save({"state": {0: _Payload(marker)}, "param_groups": []}, folder / "optimizer.pt")
    torch.save({"python": _Payload(marker)}, folder / "rng-0.pt")  # the old RNG file name: never read
    code, output = _cli("train", str(path), "--resume", "--no-progress")
    assert code == 2, output
    assert "optimizer.pt holds more than tensors and plain data, so it was not loaded (nothing in it ran)" in output
    assert not marker.exists()
    assert (folder / "state.json").read_bytes() == state_before and (folder / LORA).is_file()


def test_rng_states_are_json_and_optimizer_loads_with_weights_only(stopped: Path) -> None:
    folder = stopped / "run" / "checkpoints" / "step-0000002"
    rng = json.loads((folder / "rng-0.json").read_text())
    assert set(rng) == {"python", "numpy", "torch"} and not list(folder.glob("rng-*.pt"))
    assert set(torch.load(folder / "optimizer.pt", weights_only=True)) == {"state", "param_groups"}


# -- 2. ids: evaluation writes stay inside checkpoint.out -------------------------------------------


def test_eval_images_of_hostile_ids_stay_inside_checkpoint_out(tmp_path: Path, pairs: Path, data_dir: Path) -> None:
    import dataclasses

    first, second = tiny_samples(2)
    hostile = [dataclasses.replace(first, id="../../../escaped-by-eval"), dataclasses.replace(second, id="a/b/c")]
    (tmp_path / "bench").mkdir()
    bench = write_tiny_bench(tmp_path / "bench", data_dir, samples=hostile)
    path = _config(tmp_path / "t", pairs, eval={"every": 4, "bench": str(bench), "data_dir": str(data_dir)})
    result = Trainer(load_config(path), progress=False).run()
    assert result.global_step == 12
    out = tmp_path / "t" / "run"
    written = sorted(p.relative_to(out).as_posix() for p in (out / "eval").rglob("*.png"))
    assert written == [f"eval/step-{s:07d}/{n}" for s in (4, 8, 12) for n in (".._.._.._escaped-by-eval.png", "a_b_c.png")]
    assert not [p for p in tmp_path.rglob("*escaped-by-eval*") if out not in p.parents]


def test_run_and_training_eval_name_files_by_one_rule(tmp_path: Path) -> None:
    from picbench.paths import safe_file_stem
    from picbench.records import Generation
    from picbench.store import RunStore

    generation = Generation("m", "1", {}, "../x/y", 3)
    with RunStore(tmp_path) as store:
        assert store.image_name(generation) == f"images/{safe_file_stem('../x/y')}__seed3__{generation.key[:12]}.png"
    assert safe_file_stem("../x/y") == ".._x_y" and safe_file_stem("ok-id_1.2") == "ok-id_1.2"


# -- 3. one trainer per output folder -------------------------------------------------------------


def _train_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from picbench.cli import main; main()", "train", str(config), "--no-progress", *extra]


def test_second_trainer_on_one_folder_is_refused_at_once_naming_the_first(tmp_path: Path, pairs: Path) -> None:
    path = _config(tmp_path, pairs)
    second: dict[str, subprocess.CompletedProcess] = {}

    def start_another(record: dict) -> None:
        if record["step"] == 2:
            second["proc"] = subprocess.run(
                _train_cmd(path), capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "COLUMNS": "300"}
            )

    result = Trainer(load_config(path), progress=False, on_step=start_another).run()
    refused = second["proc"]
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"is being worked on by picbench train pid {os.getpid()}" in " ".join(refused.stderr.split())
    assert "Traceback" not in refused.stderr
    out = tmp_path / "run"
    assert result.global_step == 12 and (out / "checkpoints" / "latest").read_text() == "step-0000012"
    assert {p.name for p in (out / "lora").iterdir()} == {LORA, "uno_dit_lora.safetensors"}
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == list(range(1, 13))


def test_bmpds_build_folder_is_locked(tmp_path: Path, data_dir: Path) -> None:
    from picbench.locks import FolderLock

    config = tmp_path / "bmpds.toml"
    config.write_text('name = "b"\nsize = 64\nmodels = "tiny"\n[stages]\nsingle = 1\nforward = 0\nbackward = 0\n')
    out = tmp_path / "build"
    with FolderLock(out, name=".lock-0of1", verb="picbench data build bmpds"):
        code, output = _cli("data", "build", "bmpds", str(config), "--out", str(out), "--data-dir", str(data_dir))
    assert code == 2 and f"is being worked on by picbench data build bmpds pid {os.getpid()}" in output, output
    assert sorted(p.name for p in out.iterdir()) == [".lock-0of1"]  # nothing else was started


# -- 4 and 5. SIGTERM, torn log, damaged checkpoint files ------------------------------------------


def test_sigterm_saves_exits_143_and_resume_after_a_torn_log_line_is_bit_identical(tmp_path: Path, pairs: Path) -> None:
    straight = Trainer(load_config(_config(tmp_path / "straight", pairs, checkpoint={"every": 100})), progress=False).run()

    path = _config(tmp_path / "killed", pairs, checkpoint={"every": 100})
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "TERM", "5", "train", str(path), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "stopped by SIGTERM at step 5: checkpoint saved" in " ".join(proc.stdout.split()) and "Traceback" not in proc.stderr
    out = tmp_path / "killed" / "run"
    assert (out / "checkpoints" / "latest").read_text() == "step-0000005"
    with open(out / "train_log.jsonl", "a") as log:
        log.write('{"step": 6, "stage": "mu')  # what a kill during the append leaves

    code, output = _cli("train", str(path), "--resume", "--no-progress")
    assert code == 0, output
    assert "dropped a torn last line" in output
    assert _same_lora(straight.lora, out / "lora" / LORA)
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == list(range(1, 13))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "state.json").write_text('{"stage": 0, "step": '), "state.json is damaged"),
        (lambda f: (f / "state.json").write_text('{"stage": "x"}'), "field 'stage' must be int"),
        (lambda f: (f / "optimizer.pt").write_bytes((f / "optimizer.pt").read_bytes()[:200]), "optimizer.pt is damaged or truncated"),
        (lambda f: (f / LORA).write_bytes((f / LORA).read_bytes()[:100]), f"{LORA} is damaged or truncated"),
        (lambda f: (f / "rng-0.json").write_text("[1, 2"), "rng-0.json is damaged"),
        (lambda f: (f.parent / "latest").write_text("../../../etc"), "must name a checkpoint folder"),
    ],
    ids=["state-torn", "state-type", "optimizer-truncated", "lora-truncated", "rng-torn", "latest-escapes"],
)
def test_damaged_checkpoint_file_is_named_without_a_traceback(tmp_path: Path, stopped: Path, damage, message: str) -> None:
    path, folder = _copy_of(stopped, tmp_path)
    damage(folder)
    code, output = _cli("train", str(path), "--resume", "--no-progress")
    assert code == 2 and message in " ".join(output.split()), output
    assert (folder / "uno_dit_lora.safetensors").is_file()  # the rest of the checkpoint is left as it was


def test_damaged_log_line_before_the_last_is_named(tmp_path: Path, stopped: Path) -> None:
    path, folder = _copy_of(stopped, tmp_path)
    log = folder.parent.parent / "train_log.jsonl"
    lines = log.read_text().splitlines()
    log.write_text(lines[0][:10] + "\n" + lines[1] + "\n")
    code, output = _cli("train", str(path), "--resume", "--no-progress")
    assert code == 2 and f"{log}:1: not a JSON record" in " ".join(output.split()), output


# -- 6. numbers: bounded config, divergence stops with the last finite state ------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('lr = 1e-3\nsplit = "single"', 'lr = inf\nsplit = "single"', "stages[0].lr must be a finite number, got inf"),
        ('lr = 1e-3\nsplit = "single"', 'lr = 1e30\nsplit = "single"', "stages[0].lr must be in (0, 1]"),
        ("seed = 0\nglobal_batch", "seed = 0\nguidance = nan\nglobal_batch", "train.guidance must be a finite number, got nan"),
        ("steps = 4\n", "steps = 1000000000\n", "stages[0].steps must be in [1, 100000000]"),
        ("vaa = true\n", "vaa = true\nsigma = -inf\n", "model.sigma must be a finite number"),
    ],
    ids=["lr-inf", "lr-1e30", "guidance-nan", "steps-1e9", "sigma-inf"],
)
def test_non_finite_or_unbounded_config_numbers_are_refused_before_work(
    tmp_path: Path, pairs: Path, old: str, new: str, message: str
) -> None:
    path = _config(tmp_path, pairs)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    code, output = _cli("train", str(path), "--no-progress")
    assert code == 2 and str(path) in output.replace("\n", "") and message in " ".join(output.split()), output
    assert not (tmp_path / "run").exists()


def test_nan_loss_mid_run_stops_naming_the_step_and_the_last_finite_checkpoint_resumes(
    tmp_path: Path, pairs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    poisoned = {"on": False}
    real_loss = training_loop.flow_matching_loss

    def loss(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        value = real_loss(*args, **kwargs)
        return value * float("nan") if poisoned["on"] else value

    def poison_after(record: dict) -> None:
        poisoned["on"] = record["step"] == 5

    monkeypatch.setattr(training_loop, "flow_matching_loss", loss)
    config = load_config(_config(tmp_path, pairs, checkpoint={"every": 100}))
    with pytest.raises(TrainingDiverged, match=r"is not finite at step 6 \(stage 'multi'.*the last finite state, step 5, is saved"):
        Trainer(config, progress=False, on_step=poison_after).run()
    folder = tmp_path / "run" / "checkpoints" / "step-0000005"
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == folder.name
    weights = load_file(str(folder / LORA))
    assert all(torch.isfinite(t).all() for t in weights.values())
    poisoned["on"] = False
    resumed = Trainer(config, resume=True, progress=False).run()
    assert resumed.global_step == 12


# -- 7. a resume after the pair set or the config changed ------------------------------------------


def test_resume_refuses_a_changed_pair_set_unless_allowed(tmp_path: Path, pairs: Path) -> None:
    mine = tmp_path / "pairs"
    shutil.copytree(pairs, mine)
    path = _config(tmp_path, mine, checkpoint={"every": 100})
    _stop_at(path, 2)
    file = mine / "pairs.jsonl"
    text = file.read_text()
    assert '"prompt":"' in text
    file.write_text(text.replace('"prompt":"', '"prompt":"a changed prompt: ', 1))
    code, output = _cli("train", str(path), "--resume", "--no-progress")
    flat = " ".join(output.split())
    assert code == 2 and f"another pair set ({file} hashed" in flat and "--allow-data-change" in flat, output
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-0000002"
    code, output = _cli("train", str(path), "--resume", "--allow-data-change", "--no-progress")
    assert code == 0 and "although it was written with another pair set" in " ".join(output.split()), output


def test_resume_names_the_changed_config_table(tmp_path: Path, stopped: Path) -> None:
    path, _ = _copy_of(stopped, tmp_path)
    path.write_text(path.read_text().replace("[optim]\n", "[optim]\nweight_decay = 0.02\n"))
    code, output = _cli("train", str(path), "--resume", "--no-progress")
    assert code == 2 and "another config (optim changed)" in " ".join(output.split()), output


# -- 11. missing generation extras ----------------------------------------------------------------


def _without_generation_extra(*args: str) -> subprocess.CompletedProcess:
    block = "import sys; [sys.modules.__setitem__(m, None) for m in ('diffusers', 'peft', 'accelerate')]; "
    return subprocess.run(
        [sys.executable, "-c", block + "from picbench.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "300"},
    )


def test_missing_generation_extra_is_named_by_train_bmpds_and_run(tmp_path: Path, pairs: Path, data_dir: Path) -> None:
    path = _config(tmp_path, pairs)
    config = tmp_path / "bmpds.toml"
    config.write_text('models = "tiny"\n')
    bench = write_tiny_bench(tmp_path, data_dir, n=2)
    run = [
        "run",
        "--method",
        "positionic",
        "--bench",
        str(bench),
        "--data-dir",
        str(data_dir),
        "--models",
        "tiny",
        "--out",
        str(tmp_path / "r"),
    ]
    for args in (
        ["train", str(path)],
        ["data", "build", "bmpds", str(config), "--out", str(tmp_path / "b"), "--data-dir", str(data_dir)],
        run,
    ):
        proc = _without_generation_extra(*args)
        assert proc.returncode == 2, proc.stderr[-2000:]
        flat = " ".join(proc.stderr.split())
        assert "needs the 'generate' extra" in flat and "pip install 'picbench[generate]'" in flat and "Traceback" not in flat
    assert not (tmp_path / "run").exists() and not (tmp_path / "b").exists() and not list(tmp_path.rglob("*.png"))


# -- 15. file permissions -------------------------------------------------------------------------


def test_checkpoint_and_lora_files_follow_the_umask(tmp_path: Path, pairs: Path) -> None:
    result = Trainer(load_config(_config(tmp_path, pairs, checkpoint={"every": 6})), progress=False).run()
    want = 0o666 & ~current_umask()
    files = [p for p in (tmp_path / "run" / "checkpoints").rglob("*") if p.is_file()] + list(result.lora.parent.iterdir())
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(want)}


# -- 8. a full disk or a file-size limit -----------------------------------------------------------


def _with_file_size_limit(limit: int, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a process whose files cannot grow past `limit` bytes (writes past it fail with
    EFBIG, as on a full disk; Python ignores SIGXFSZ)."""
    import resource

    return subprocess.run(
        [sys.executable, "-c", "from picbench.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "300"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )


def test_file_size_limit_during_training_exits_2_and_keeps_the_last_checkpoint(tmp_path: Path, stopped: Path) -> None:
    path, folder = _copy_of(stopped, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = _with_file_size_limit(8000, "train", str(path), "--resume", "--no-progress")
    flat = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "File too large" in flat and f"The checkpoint {folder} is whole; free space and continue with --resume" in flat
    assert "Traceback" not in proc.stderr
    assert (folder.parent / "latest").read_text() == folder.name
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not list(folder.parent.glob(".step-*.tmp"))
    assert Trainer(load_config(path), resume=True, progress=False).run().global_step == 12


def test_file_size_limit_while_writing_a_report_exits_2(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-3, "grad_norm": 1.0}) + "\n" for s in range(1, 30))
    )
    proc = _with_file_size_limit(1000, "report", str(run), "--out", str(tmp_path / "page.html"))
    assert proc.returncode == 2 and "File too large" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "page.html").exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- 13. oversized images, backends the device lacks ----------------------------------------------


def test_decompression_bomb_in_a_pair_set_is_refused_before_any_model(tmp_path: Path, pairs: Path) -> None:
    from PIL import Image

    mine = tmp_path / "pairs"
    shutil.copytree(pairs, mine)
    first = json.loads((mine / "pairs.jsonl").read_text().splitlines()[1])
    reference = mine / first["subjects"][0]["references"][0]
    Image.new("1", (14000, 14000)).save(reference.with_suffix(".png"))
    reference.with_suffix(".png").replace(reference)
    path = _config(tmp_path, mine)
    code, output = _cli("train", str(path), "--no-progress")
    flat = " ".join(output.split())
    assert code == 2 and f"sample {first['id']!r}" in flat and "too large to decode safely" in flat and "downscale it" in flat, output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_flex_attention_on_a_cpu_is_refused_before_work(tmp_path: Path, pairs: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("flex trains on CUDA")
    path = _config(tmp_path, pairs, model={"attention_backend": "flex"})
    code, output = _cli("train", str(path), "--no-progress")
    assert code == 2 and "model.attention_backend = 'flex' trains only on CUDA" in " ".join(output.split()), output
    assert not (tmp_path / "run").exists()
