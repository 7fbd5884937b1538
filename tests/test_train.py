"""The PositionIC trainer on CPU: tiny random-weight FLUX, real paste-pairs from the shared data.

Shown here: the config is checked (unknown keys, impossible values), the paper's recipe is the
default, a few pairs are overfit, a SIGKILLed run resumes to the uninterrupted run's LoRA bit for
bit, Ctrl-C saves and stops, VAA's locality holds in the gradient, bad pairs are refused before
any step or skipped mid-run, and the saved LoRA runs in `picbench run --method positionic`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from holding import cli_holding_after, wait_until_held
from PIL import Image
from run_bench_helpers import write_tiny_bench
from safetensors.torch import load_file
from train_helpers import tiny_config
from typer.testing import CliRunner

from picbench.cli import app
from picbench.errors import BenchFormatError, PicbenchError
from picbench.reference_impl.training import CONFIG_DIR, ConfigError, load_config
from picbench.reference_impl.training.loop import (
    Trainer,
    TrainingInterrupted,
    learning_rate,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    from picbench.pairs.paste import build_paste_pairs

    out = tmp_path_factory.mktemp("pairs") / "paste-pairs"
    build_paste_pairs(data_dir, out, seed=0, n_multi=4, n_single=2)
    return out


# -- config --------------------------------------------------------------------------------------


def test_default_config_is_the_papers_recipe() -> None:
    """PositionIC: rank 512 from UNO, global batch 128, lr 1e-5, 10k single + 8k multi steps; UNO's
    train.py @ d305981: AdamW (0.9, 0.999), wd 0.01, clip 1.0, text dropout 0.1, guidance 1, warmup 100."""
    c = load_config(CONFIG_DIR / "paper.toml")
    assert (c.model.rank, c.model.init_lora, c.model.vaa, c.model.gradient_checkpointing) == (512, "uno", True, True)
    assert (c.train.global_batch, c.train.guidance, c.train.max_grad_norm, c.data.caption_dropout) == (128, 1.0, 1.0, 0.1)
    assert (c.optim.betas, c.optim.weight_decay, c.optim.warmup_steps) == ((0.9, 0.999), 0.01, 100)
    assert [(s.name, s.steps, s.lr, s.split) for s in c.stages] == [("single", 10000, 1e-5, "single"), ("multi", 8000, 1e-5, "multi")]
    c.check_world(8)
    assert c.accumulation(8) == 4
    defaults = type(c)()
    assert (defaults.model, defaults.train, defaults.optim, defaults.data) == (c.model, c.train, c.optim, c.data)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"train": {"global_batch": 3, "micro_batch": 2}}, "not divisible by train.micro_batch"),
        ({"model": {"rnak": 4}}, r"model\.rnak"),
        ({"data": {"buckets": [[64, 60]]}}, r"data\.buckets\[0\]"),
        ({"train": {"timesteps": "cosine"}}, r"train\.timesteps"),
        ({"data": {"caption_dropout": "0.1"}}, r"data\.caption_dropout must be float"),
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path: Path, pairs: Path, edit: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        load_config(tiny_config(tmp_path, pairs, **edit))
    assert "train.toml" in str(err.value)


def test_global_batch_must_divide_by_world_times_micro_batch(tmp_path: Path, pairs: Path) -> None:
    config = load_config(tiny_config(tmp_path, pairs, train={"global_batch": 2, "micro_batch": 1}))
    config.check_world(2)
    with pytest.raises(ConfigError, match="not divisible by world size 4 x train.micro_batch 1"):
        config.check_world(4)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine() -> None:
    lrs = [learning_rate(1e-5, s, 10, 2) for s in range(10)]
    assert lrs[:2] == [5e-6, 1e-5]
    assert lrs[2] == pytest.approx(1e-5) and lrs[6] == pytest.approx(0.5e-5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a > b for a, b in itertools.pairwise(lrs[2:]))


def test_training_times_follow_unos_shifted_schedule() -> None:
    """UNO's train.py: t = get_schedule(999, (res // 8)^2 // 4)[randint(0, 1000)]; at 512 px mu = 0.63."""
    from picbench.reference_impl.schedule import lin_mu, time_shift, training_times

    assert lin_mu(1024) == pytest.approx(0.63)
    t = training_times(1024, 4000, torch.Generator().manual_seed(0))
    grid = time_shift(0.63, torch.linspace(1, 0, 1000, dtype=torch.float64)).float()
    assert torch.isin(t, grid).all() and t.min() >= 0 and t.max() <= 1
    assert abs(t.mean().item() - grid.mean().item()) < 0.02
    bigger = training_times(4096, 4000, torch.Generator().manual_seed(0))  # mu per bucket: more tokens, later times
    assert bigger.mean() > t.mean()
    ln = training_times(1024, 1000, torch.Generator().manual_seed(0), logit_normal=True)
    assert 0 < ln.min() and ln.max() < 1


def test_lora_is_unos_parametrization_and_round_trips_to_its_layout() -> None:
    """Initialized from a LoRA in UNO's released layout (bytedance/UNO @ d305981 uno/flux/util.py
    set_lora), the trainable LoRA saves back to exactly that file; at FLUX.1-dev's widths and rank
    512 it has the 0.956 B parameters docs/training.md's memory arithmetic uses."""
    from types import SimpleNamespace

    from picbench.reference_impl.lora import (
        add_trainable_lora,
        lora_state_dict,
        random_uno_lora,
        to_uno_layout,
        uno_lora_layout,
    )
    from picbench.tiny.flux import tiny_components

    transformer = tiny_components(seed=1)["transformer"]
    uno = random_uno_lora(transformer, rank=4, seed=7)
    params = add_trainable_lora(transformer, rank=4, init=uno)
    assert sum(p.numel() for p in params) == sum(t.numel() for t in uno.values())  # q, k, v share one lora_A
    assert all(p.dtype == torch.float32 and p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in transformer.named_parameters() if "lora_" not in n)
    back = to_uno_layout(lora_state_dict(transformer), transformer)
    assert set(back) == set(uno) and all(torch.equal(back[k], uno[k]) for k in uno)
    flux_dev = SimpleNamespace(config=SimpleNamespace(num_attention_heads=24, attention_head_dim=128, num_layers=19, num_single_layers=38))
    assert sum(a * b for a, b in uno_lora_layout(flux_dev, rank=512).values()) == 956_301_312


# -- bad input -----------------------------------------------------------------------------------


def test_missing_image_is_refused_before_any_model_is_built(tmp_path: Path, pairs: Path) -> None:
    broken = tmp_path / "pairs"
    shutil.copytree(pairs, broken)
    victim = sorted((broken / "targets").iterdir())[1]
    victim.unlink()
    with pytest.raises(BenchFormatError, match=victim.name) as err:
        Trainer(load_config(tiny_config(tmp_path, broken)), progress=False)
    assert err.value.field == "target" and err.value.sample_id == victim.stem


def test_corrupt_pair_met_mid_run_is_skipped_and_counted(tmp_path: Path, pairs: Path) -> None:
    broken = tmp_path / "pairs"
    shutil.copytree(pairs, broken)
    victim = max((broken / "targets").iterdir())
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # the header survives, the pixels do not
    result = Trainer(load_config(tiny_config(tmp_path, broken, train={"ema_decay": 0.5})), progress=False).run()
    assert list(result.skipped) == [victim.stem]
    assert result.global_step == 12 and result.lora.is_file()
    lora, ema = load_file(str(result.lora)), load_file(str(result.lora.parent / "ema_pytorch_lora_weights.safetensors"))
    assert set(lora) == set(ema) and any(not torch.equal(lora[k], ema[k]) for k in lora)


def test_unwritable_output_is_refused_before_training(tmp_path: Path, pairs: Path) -> None:
    (tmp_path / "file").write_text("")
    config = load_config(tiny_config(tmp_path, pairs, checkpoint={"out": str(tmp_path / "file" / "run")}))
    with pytest.raises(PicbenchError, match="checkpoint.out .* is not writable"):
        Trainer(config, progress=False)


def test_released_layout_in_weights_dir_is_found_offline(tmp_path: Path, pairs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weights_dir = DIR with DIR/FLUX.1-dev (a diffusers folder) and DIR/UNO/dit_lora.safetensors (the aliases of DIR/<hub id>)."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    from picbench.errors import MissingWeightsError
    from picbench.reference_impl.lora import random_uno_lora
    from picbench.reference_impl.pipeline import PositionICPipeline
    from picbench.tiny.flux import tiny_components

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    weights = tmp_path / "weights"
    pipe = PositionICPipeline(**tiny_components(seed=0))
    pipe.save_pretrained(weights / "FLUX.1-dev")
    uno = random_uno_lora(pipe.transformer, rank=4, seed=3)
    (weights / "UNO").mkdir()
    save_file(uno, str(weights / "UNO" / "dit_lora.safetensors"))
    model = {"base": "black-forest-labs/FLUX.1-dev"}
    top = {"models": "default", "weights_dir": str(weights)}
    trainer = Trainer(
        load_config(tiny_config(tmp_path, pairs, top=top, model=model, checkpoint={"out": str(tmp_path / "a")})), progress=False
    )
    to_q = trainer.pipe.transformer.transformer_blocks[0].attn.to_q
    assert torch.equal(to_q.lora_A["positionic"].weight, uno["double_blocks.0.processor.qkv_lora1.down.weight"])
    (weights / "UNO" / "dit_lora.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match="dit_lora.safetensors"):
        Trainer(load_config(tiny_config(tmp_path, pairs, top=top, model=model, checkpoint={"out": str(tmp_path / "b")})), progress=False)


def test_existing_checkpoints_need_resume(tmp_path: Path, pairs: Path) -> None:
    config = load_config(tiny_config(tmp_path, pairs))
    Trainer(config, progress=False).run()
    with pytest.raises(PicbenchError, match="--resume"):
        Trainer(config, progress=False)


# -- must show -----------------------------------------------------------------------------------


def test_tiny_training_overfits_a_few_pairs(tmp_path: Path, pairs: Path) -> None:
    """Two pairs, fixed seed: the loss on fixed noise and times falls at least 2x in 100 steps
    (measured 1.23 -> 0.54)."""
    from picbench.reference_impl.training.objective import (
        encode_pair,
        flow_matching_loss,
        prepare_inputs,
    )
    from picbench.reference_impl.vaa import VAASettings

    config = load_config(
        tiny_config(
            tmp_path,
            pairs,
            model={"rank": 16, "init_lora": "none", "gradient_checkpointing": False},
            data={"caption_dropout": 0.0},
            train={"global_batch": 2, "micro_batch": 2},
            optim={"warmup_steps": 0, "weight_decay": 0.0},
        )
    )
    config = dataclasses.replace(
        config, stages=(dataclasses.replace(config.stages[1], steps=100, lr=3e-2, min_subjects=2, max_subjects=2),)
    )
    trainer = Trainer(config, progress=False)
    pipe = trainer.pipe
    batch = [encode_pair(pipe, trainer.source.load(e)) for e in trainer.source.by_stage["multi"][:2]]

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(
                np.mean(
                    [
                        flow_matching_loss(
                            pipe.transformer,
                            prepare_inputs(
                                pipe,
                                batch,
                                torch.Generator().manual_seed(100 + s),
                                caption_dropout=0.0,
                                guidance=1.0,
                                vaa=VAASettings(attention_backend="sdpa_lowrank"),
                            ),
                        ).item()
                        for s in range(4)
                    ]
                )
            )

    before = fixed_loss()
    trainer.run()
    after = fixed_loss()
    assert after < before / 2, (before, after)
    log = [json.loads(line) for line in (config.resolve(config.checkpoint.out) / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 101)) and all(r["grad_norm"] > 0 for r in log)


def _train_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from picbench.cli import main; main()", "train", str(config), "--no-progress", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path: Path, pairs: Path) -> None:
    """Bit-equal LoRA (CPU, fp32): optimizer, data position, stage and every random draw resume exactly."""
    straight = tmp_path / "straight"
    straight.mkdir()
    long = {"checkpoint": {"every": 3}, "train": {"global_batch": 2, "micro_batch": 1}}
    config = load_config(tiny_config(straight, pairs, **long))
    config = dataclasses.replace(config, stages=tuple(dataclasses.replace(s, steps=10) for s in config.stages))
    reference = Trainer(config, progress=False).run()

    killed = tmp_path / "killed"
    killed.mkdir()
    text = tiny_config(killed, pairs, **long).read_text().replace("steps = 4\n", "steps = 10\n").replace("steps = 8\n", "steps = 10\n")
    (killed / "train.toml").write_text(text)
    marker = tmp_path / "held"
    held = [*cli_holding_after("picbench.reference_impl.training.checkpoint:publish", 1, marker), *_train_cmd(killed / "train.toml")[3:]]
    proc = subprocess.Popen(held, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = killed / "run" / "checkpoints" / "latest"
    wait_until_held(proc, marker)  # at its second checkpoint, the first published
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    stopped_at = json.loads((killed / "run" / "checkpoints" / latest.read_text() / "state.json").read_text())["global_step"]
    assert stopped_at == 3  # the first checkpoint (every 3 steps); the second was never published

    resumed = subprocess.run(_train_cmd(killed / "train.toml", "--resume"), capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_file(str(reference.lora)), load_file(str(killed / "run" / "lora" / "pytorch_lora_weights.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line)["step"] for line in (killed / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 21))  # lines the killed run wrote past its checkpoint are replaced


def test_ctrl_c_saves_a_checkpoint_and_stops(tmp_path: Path, pairs: Path) -> None:
    config = load_config(tiny_config(tmp_path, pairs, checkpoint={"every": 100}))

    def interrupt(record: dict) -> None:
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="--resume"):
        Trainer(config, progress=False, on_step=interrupt).run()
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-0000003"
    resumed = Trainer(config, resume=True, progress=False).run()
    assert resumed.global_step == 12


def test_vaa_locality_holds_in_the_training_gradient() -> None:
    """One joint block, two non-overlapping boxes: target tokens outside box k get no gradient from
    reference k's latents, those inside do. (Through stacked blocks the text and target tokens relay
    reference information, by VAA's design: text <-> reference stays open.)"""
    from diffusers import FluxTransformer2DModel

    from picbench.reference_impl.pipeline import PositionICPipeline
    from picbench.reference_impl.training.objective import (
        EncodedPair,
        predict,
        prepare_inputs,
    )
    from picbench.reference_impl.vaa import VAASettings
    from picbench.reference_impl.vwr import volume_weights
    from picbench.tiny.flux import tiny_components

    components = tiny_components(seed=2)
    components["transformer"] = FluxTransformer2DModel.from_config(components["transformer"].config, num_single_layers=0)
    pipe = PositionICPipeline(**components)
    g = torch.Generator().manual_seed(0)
    boxes, depths = ((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)), (0, 1)
    pair = EncodedPair(
        "a dog and a cat", torch.randn(1, 16, 16, generator=g), (4, 4), torch.randn(1, 8, 16, generator=g), ((2, 2), (2, 2)), boxes, depths
    )
    inside = volume_weights(list(boxes), list(depths), (4, 4))[0].flatten() > 0
    assert inside.sum() == 8

    def grads(vaa: bool) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = prepare_inputs(
            pipe,
            [pair],
            torch.Generator().manual_seed(1),
            caption_dropout=0.0,
            guidance=1.0,
            vaa=VAASettings(vaa=vaa, attention_backend="sdpa_lowrank"),
        )
        out = []
        for region in (~inside, inside):
            refs = inputs.references.clone().requires_grad_(True)
            error = (predict(pipe.transformer, inputs, refs).float() - inputs.velocity) ** 2
            error[:, region].mean().backward()
            out.append(refs.grad[0, :4].abs().max())  # reference 0's four tokens
        return out[0], out[1]

    outside, within = grads(vaa=True)
    assert outside == 0 and within > 0
    plain_outside, _ = grads(vaa=False)
    assert plain_outside > 0


def test_saved_lora_runs_in_picbench_run_and_changes_the_images(tmp_path: Path, pairs: Path, data_dir: Path) -> None:
    """Both layouts: diffusers/peft (`pytorch_lora_weights.safetensors`) and UNO's (`uno_dit_lora.safetensors`)."""
    from picbench.leaderboard import result_row
    from picbench.results import load_result

    result = Trainer(load_config(tiny_config(tmp_path, pairs, model={"rank": 8, "init_lora": "none"})), progress=False).run()
    uno = load_file(str(result.uno_lora))
    assert any(".processor.qkv_lora1.down.weight" in k for k in uno)
    bench = write_tiny_bench(tmp_path, data_dir, n=1)
    images = {}
    for name, lora in (("trained", result.lora), ("uno-layout", result.uno_lora), ("default", None)):
        out = tmp_path / name
        args = [
            "run",
            "--method",
            "positionic",
            "--bench",
            str(bench),
            "--data-dir",
            str(data_dir),
            "--models",
            "tiny",
            "--detector",
            "none",
            "--out",
            str(out),
            "--param",
            "steps=2",
        ]
        invoked = runner.invoke(app, args + (["--param", f"lora={lora}"] if lora else []))
        assert invoked.exit_code == 0, invoked.output
        images[name] = np.asarray(Image.open(next((out / "images").rglob("*.png"))))
        row = result_row(load_result(out))
        assert ("trained PositionIC LoRA" in row["weights"]) == (lora is not None)
        if lora is None:
            assert "VAA on UNO" in row["weights"]
    assert np.array_equal(images["trained"], images["uno-layout"])  # the same LoRA in both layouts
    assert not np.array_equal(images["trained"], images["default"])


def test_validation_scores_the_bench_during_training(tmp_path: Path, pairs: Path, data_dir: Path) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=2)
    config = load_config(tiny_config(tmp_path, pairs, eval={"every": 6, "bench": str(bench), "data_dir": str(data_dir)}))
    Trainer(config, progress=False).run()
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    scored = [r for r in log if "eval" in r]
    assert [r["step"] for r in scored] == [6, 12]
    assert {"clip_i", "dino", "n_items"} <= set(scored[0]["eval"]) and scored[0]["eval"]["n_items"] == 2
    assert len(list((tmp_path / "run" / "eval" / "step-0000006").glob("*.png"))) == 2
    page = runner.invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "curves.html")])
    assert page.exit_code == 0, page.output
    html = (tmp_path / "curves.html").read_text()
    assert "validation scores" in html and html.count("data:image/png;base64,") == 2 and "<th>last step</th><td>12</td>" in html


@pytest.mark.slow
def test_two_gloo_processes_equal_one_at_the_same_global_batch(tmp_path: Path, pairs: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
        tiny_config(folder, pairs, train={"global_batch": 2, "micro_batch": 1})
    single = subprocess.run(_train_cmd(one / "train.toml"), capture_output=True, text=True, timeout=600, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29613", shutil.which("picbench")]
    double = subprocess.run(
        torchrun + ["train", str(two / "train.toml"), "--no-progress"], capture_output=True, text=True, timeout=600, check=False
    )
    assert double.returncode == 0, double.stderr[-3000:]
    a = load_file(str(one / "run" / "lora" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(two / "run" / "lora" / "pytorch_lora_weights.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)  # gradient sums in another order
    worlds = {json.loads(line)["world"] for line in (two / "run" / "train_log.jsonl").read_text().splitlines()}
    assert worlds == {2}


def test_resume_of_a_finished_training_says_so_and_its_report_is_labelled_smoke(tmp_path: Path, pairs: Path) -> None:
    config_path = tiny_config(tmp_path, pairs)
    first = Trainer(load_config(config_path), progress=False).run()
    assert not first.already_finished
    resumed = runner.invoke(app, ["train", str(config_path), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    text = " ".join(resumed.output.split())
    assert f"is already finished ({first.global_step} steps); nothing was trained" in text and "nan" not in text
    page = tmp_path / "train.html"
    assert runner.invoke(app, ["report", str(tmp_path / "run"), "--out", str(page)]).exit_code == 0
    assert '<div class="smoke" role="alert">SMOKE RUN: random-weight models' in page.read_text()
