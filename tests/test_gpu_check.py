"""benchmarks/gpu_check.py without a GPU: its arguments, its JSON line, the refusal without CUDA
(one line, exit 2), and running picbench from the checkout uninstalled (as on a bare GPU machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))
import gpu_check  # noqa: E402


def test_arguments_and_their_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    args = gpu_check.parse_args([])
    assert args.parts == list(gpu_check.PARTS) and args.device == "cuda" and args.wheels == SCRIPT.parent / "gpu_wheels"
    assert gpu_check.parse_args(["--parts", "metrics, attention"]).parts == ["metrics", "attention"]
    assert args.budget_s == 450.0
    for bad in (["--parts", "attention,speed"], ["--parts", ""], ["--reps", "0"]):
        with pytest.raises(SystemExit) as info:
            gpu_check.parse_args(bad)
        assert info.value.code == 2
    assert "speed" in capsys.readouterr().err


def test_result_is_one_json_line_and_a_failed_part_is_not_ok() -> None:
    device = {"name": "test", "torch": "2.11.0"}
    good = gpu_check.result_line(device, {"attention": {"1024px_2refs": {}}, "trainer": {"status": "not available"}}, 12.34)
    assert "\n" not in good
    parsed = json.loads(good)
    assert parsed["gpu_check"] == gpu_check.SCHEMA and parsed["ok"] is True and parsed["seconds"] == 12.3
    assert parsed["device"] == device and parsed["trainer"] == {"status": "not available"}
    failed = gpu_check.guarded(lambda: 1 / 0)
    assert failed == {"error": "ZeroDivisionError: division by zero"}
    assert json.loads(gpu_check.result_line(device, {"metrics": failed}, 1.0))["ok"] is False


def test_without_cuda_it_exits_2_with_one_line() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device")
    assert gpu_check.cuda_refusal("cpu") == "gpu_check needs a CUDA device, got --device cpu"


def test_missing_packages_come_only_from_the_wheels_folder(tmp_path: Path) -> None:
    gpu_check.install_from_wheels(tmp_path / "absent", [])  # nothing missing: nothing to do
    with pytest.raises(SystemExit, match="missing diffusers and no wheels folder"):
        gpu_check.install_from_wheels(tmp_path / "absent", ["diffusers"])
    (tmp_path / "wheels").mkdir()
    with pytest.raises(SystemExit, match="installing not-a-package from .*wheels failed"):
        gpu_check.install_from_wheels(tmp_path / "wheels", ["not-a-package"])  # --no-index: never the network
    assert set(gpu_check.missing_packages()) <= set(gpu_check.NEEDED.values())


def test_picbench_runs_from_the_checkout_uninstalled(tmp_path: Path) -> None:
    """`python -S` skips site processing, so picbench's editable install is invisible; torch and
    the rest stay importable from site-packages as plain folders."""
    site_dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    probe = (
        f"import sys; sys.path.extend({site_dirs!r}); sys.path.insert(0, {str(SCRIPT.parent)!r})\n"
        "import importlib.util; assert importlib.util.find_spec('picbench') is None\n"
        "import gpu_check; gpu_check.import_checkout()\n"
        "import picbench.reference_impl.attention as a, picbench.adapters as c; print(a.__file__); print(c.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr
    attention, checkpoints = done.stdout.split()
    assert Path(attention) == REPO / "reference_impl" / "attention.py"
    assert Path(checkpoints) == REPO / "adapters" / "__init__.py"


def test_parts_run_in_turn_until_the_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a clock the test moves (each slow part takes 5 s of it), not the wall clock."""
    clock = [0.0]
    monkeypatch.setattr(gpu_check, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def slow() -> dict:
        clock[0] += 5.0
        return {"figure": 1}

    calls = {"attention": slow, "pipeline": lambda: 1 / 0, "metrics": slow, "trainer": slow}
    parts = gpu_check.run_parts(calls, ["attention", "pipeline", "metrics"], budget_s=10.0)
    assert parts == {"attention": {"figure": 1}, "pipeline": {"error": "ZeroDivisionError: division by zero"}, "metrics": {"figure": 1}}
    clock[0] = 0.0
    late = gpu_check.run_parts(calls, ["attention", "trainer"], budget_s=4.0)
    assert late["attention"] == {"figure": 1} and late["trainer"]["error"].startswith("skipped: 5 s of the 4 s budget")


def test_parity_part_runs_uno_in_bf16_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Part (e) on the CPU: `uno` in bf16 gives the same image twice for one seed, its initial noise
    is UNO's draw (bytedance/UNO @ d305981 uno/flux/sampling.py:28-45) and, on the CPU only, also
    the earlier float32 draw. On CUDA the last figure is what the GPU run reports."""
    import torch

    monkeypatch.setenv("PICBENCH_HOME", str(tmp_path))
    assert "parity" in gpu_check.PARTS
    report = gpu_check.check_uno_parity(torch.device("cpu"))
    assert report["pipeline_dtype"] == "bfloat16"
    assert report["same_image_same_seed"] is True
    assert report["noise_matches_uno_device_draw"] is True
    assert report["uno_draw_differs_from_cpu_float32_draw"] is False
