"""PositionIC on FLUX with tiny random-weight components: processors, pipeline, UNO LoRA, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from picbench.errors import MissingWeightsError
from picbench.imaging import load_rgb
from picbench.reference_impl.lora import convert_uno_lora, load_uno_lora, random_uno_lora, uno_lora_layout
from picbench.reference_impl.pipeline import PositionICPipeline
from picbench.reference_impl.attention import SdpaAttention
from picbench.reference_impl.processors import VAA_KWARG, JointMask, PositionICAttnProcessor, set_positionic_processors
from picbench.reference_impl.tiny import tiny_components

# Two subjects, overlapping, the dog in front.
BOXES = [(0.05, 0.30, 0.55, 0.95), (0.40, 0.10, 0.95, 0.70)]
DEPTHS = [0, 1]
FAST = dict(steps=2, width=64, height=64, ref_long_side=32)


@pytest.fixture(scope="module")
def pipe() -> PositionICPipeline:
    p = PositionICPipeline(**tiny_components(seed=0))
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def refs(data_dir: Path) -> list:
    root = data_dir / "dreambench" / "dataset"
    return [load_rgb(root / "dog" / "00.jpg"), load_rgb(root / "backpack" / "00.jpg")]


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _transformer_inputs(n_img: int = 16, n_text: int = 7) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(n_img, 3)
    ids[:, 1], ids[:, 2] = torch.arange(n_img) // 4, torch.arange(n_img) % 4
    return dict(
        hidden_states=torch.randn(1, n_img, 16, generator=g),
        encoder_hidden_states=torch.randn(1, n_text, 32, generator=g),
        pooled_projections=torch.randn(1, 32, generator=g),
        timestep=torch.tensor([0.7]),
        img_ids=ids,
        txt_ids=torch.zeros(n_text, 3),
        guidance=torch.tensor([4.0]),
        return_dict=False,
    )


def test_processors_equal_diffusers_default_without_vaa() -> None:
    transformer = tiny_components(seed=3)["transformer"]
    inputs = _transformer_inputs()
    with torch.no_grad():
        reference = transformer(**inputs)[0]
        set_positionic_processors(transformer)
        ours = transformer(**inputs)[0]
    kinds = {type(p) for p in transformer.attn_processors.values()}
    assert kinds == {PositionICAttnProcessor}
    assert len(transformer.attn_processors) == 2  # one double-stream and one single-stream block
    assert torch.equal(reference, ours)


def test_masked_path_with_an_all_open_mask_equals_unmasked() -> None:
    """The [B, L, H, D] <-> [B, H, L, D] hand-off to the backend keeps tokens and heads in place."""
    transformer = tiny_components(seed=4)["transformer"]
    set_positionic_processors(transformer)
    inputs = _transformer_inputs(n_img=16, n_text=7)
    open_mask = JointMask(SdpaAttention(), torch.zeros(23, 23))
    closed = torch.zeros(23, 23)
    closed[7:, :7] = float("-inf")  # image tokens may not see the text
    with torch.no_grad():
        plain = transformer(**inputs)[0]
        masked = transformer(**inputs, joint_attention_kwargs={VAA_KWARG: open_mask})[0]
        blind = transformer(**inputs, joint_attention_kwargs={VAA_KWARG: JointMask(SdpaAttention(), closed)})[0]
    torch.testing.assert_close(masked, plain, rtol=1e-5, atol=1e-6)
    assert (blind - plain).abs().max() > 1e-3


def test_tiny_pipeline_on_dreambench_pair_is_seeded(pipe: PositionICPipeline, refs: list) -> None:
    a = pipe(refs, "a dog and a backpack on the grass", BOXES, DEPTHS, seed=7, **FAST)
    b = pipe(refs, "a dog and a backpack on the grass", BOXES, DEPTHS, seed=7, **FAST)
    c = pipe(refs, "a dog and a backpack on the grass", BOXES, DEPTHS, seed=8, **FAST)
    assert a.size == (64, 64) and a.mode == "RGB"
    assert np.array_equal(_pixels(a), _pixels(b))
    assert not np.array_equal(_pixels(a), _pixels(c))


def test_output_has_the_exact_requested_size(pipe: PositionICPipeline, refs: list) -> None:
    image = pipe(refs, "a dog and a backpack", BOXES, DEPTHS, seed=0, steps=1, width=72, height=40, ref_long_side=32)
    assert image.size == (72, 40)


def test_vaa_mask_changes_the_result(pipe: PositionICPipeline, refs: list) -> None:
    with_vaa = pipe(refs, "a dog and a backpack", BOXES, DEPTHS, seed=5, vaa=True, **FAST)
    without = pipe(refs, "a dog and a backpack", BOXES, DEPTHS, seed=5, vaa=False, **FAST)
    swapped = pipe(refs, "a dog and a backpack", BOXES, [1, 0], seed=5, vaa=True, **FAST)
    assert not np.array_equal(_pixels(with_vaa), _pixels(without))
    assert not np.array_equal(_pixels(with_vaa), _pixels(swapped))  # depth order reaches the mask


@pytest.mark.parametrize(
    ("boxes", "depths", "n_refs", "match"),
    [
        ([(0.1, 0.1, 1.2, 0.5), (0.2, 0.2, 0.6, 0.6)], [0, 1], 2, "outside"),
        ([(0.6, 0.1, 0.2, 0.5), (0.2, 0.2, 0.6, 0.6)], [0, 1], 2, "inverted"),
        ([(0.1, 0.1, 0.5, 0.5)], [0], 2, "only 1 boxes"),
        ([(0.1, 0.1, 0.5, 0.5), (0.2, 0.2, 0.6, 0.6)], [1, 1], 2, "depth rank 1"),
    ],
)
def test_bad_layout_fails_before_any_model_runs(pipe: PositionICPipeline, refs: list, boxes, depths, n_refs, match) -> None:
    calls: list[str] = []
    hooks = [
        getattr(pipe, name).register_forward_pre_hook(lambda *_a, _n=name: calls.append(_n))
        for name in ("transformer", "vae", "text_encoder", "text_encoder_2")
    ]
    try:
        with pytest.raises(ValueError, match=match):
            pipe((refs * 2)[:n_refs], "a dog", boxes, depths, seed=0, **FAST)
    finally:
        for h in hooks:
            h.remove()
    assert calls == []


def test_vaa_without_boxes_is_refused(pipe: PositionICPipeline, refs: list) -> None:
    with pytest.raises(ValueError, match="VAA needs one box per reference"):
        pipe(refs, "a dog", None, seed=0, **FAST)


def test_uno_lora_conversion_matches_unos_layer_semantics(tmp_path: Path) -> None:
    """The state dict is random, written in UNO's released key layout (bytedance/UNO
    uno/flux/util.py `set_lora` + uno/flux/modules/layers.py LoRA processors; see lora.py)."""
    components = tiny_components(seed=1)
    transformer = components["transformer"]
    uno = random_uno_lora(transformer, rank=4, seed=11)
    assert set(uno) == set(uno_lora_layout(transformer, rank=4))
    file = tmp_path / "dit_lora.safetensors"
    save_file(uno, str(file))
    pipe = PositionICPipeline(**components)
    load_uno_lora(pipe, file)

    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim

    def delta(module: torch.nn.Module) -> torch.Tensor:
        return module.lora_B["uno"].weight @ module.lora_A["uno"].weight * module.scaling["uno"]

    def unos(prefix: str) -> torch.Tensor:
        return uno[f"{prefix}.up.weight"] @ uno[f"{prefix}.down.weight"]

    block, single = transformer.transformer_blocks[0], transformer.single_transformer_blocks[0]
    checks = {
        "double_blocks.0.processor.qkv_lora1": [block.attn.to_q, block.attn.to_k, block.attn.to_v],
        "double_blocks.0.processor.qkv_lora2": [block.attn.add_q_proj, block.attn.add_k_proj, block.attn.add_v_proj],
        "single_blocks.0.processor.qkv_lora": [single.attn.to_q, single.attn.to_k, single.attn.to_v],
    }
    for prefix, modules in checks.items():
        full = unos(prefix)
        for part, module in enumerate(modules):
            torch.testing.assert_close(delta(module), full[part * dim : (part + 1) * dim])
    torch.testing.assert_close(delta(block.attn.to_out[0]), unos("double_blocks.0.processor.proj_lora1"))
    torch.testing.assert_close(delta(block.attn.to_add_out), unos("double_blocks.0.processor.proj_lora2"))
    torch.testing.assert_close(delta(single.proj_out), unos("single_blocks.0.processor.proj_lora"))


def test_uno_lora_outside_the_layout_is_refused() -> None:
    transformer = tiny_components(seed=1)["transformer"]
    uno = random_uno_lora(transformer, rank=2)
    with pytest.raises(ValueError, match="double_blocks.0.img_attn.qkv.lora_down.weight"):
        convert_uno_lora({**uno, "double_blocks.0.img_attn.qkv.lora_down.weight": torch.zeros(2, 2)}, source="x.safetensors")
    del uno["single_blocks.0.processor.proj_lora.up.weight"]
    with pytest.raises(ValueError, match="no matching 'single_blocks.0.processor.proj_lora.up.weight'"):
        convert_uno_lora(uno)


def test_saved_pipeline_loads_and_reproduces(pipe: PositionICPipeline, refs: list, tmp_path: Path) -> None:
    pipe.save_pretrained(tmp_path / "tiny-flux")
    loaded = PositionICPipeline.from_pretrained(tmp_path / "tiny-flux")
    loaded.set_progress_bar_config(disable=True)
    a = pipe(refs, "a dog and a backpack", BOXES, DEPTHS, seed=3, steps=1, width=32, height=32, ref_long_side=32)
    b = loaded(refs, "a dog and a backpack", BOXES, DEPTHS, seed=3, steps=1, width=32, height=32, ref_long_side=32)
    assert np.array_equal(_pixels(a), _pixels(b))


def test_missing_weights_are_named(pipe: PositionICPipeline, tmp_path: Path) -> None:
    folder = tmp_path / "FLUX.1-dev"
    pipe.save_pretrained(folder)
    for weights in (folder / "transformer").glob("*.safetensors"):
        weights.unlink()
    shutil.rmtree(folder / "tokenizer_2")
    with pytest.raises(MissingWeightsError) as missing:
        PositionICPipeline.from_pretrained(folder)
    assert "transformer/ (weights" in str(missing.value) and "tokenizer_2/" in str(missing.value)
    assert "vae" not in str(missing.value).split("missing:")[1].split(";")[0]
    with pytest.raises(MissingWeightsError, match="model_index.json"):
        PositionICPipeline.from_pretrained(tmp_path)
    with pytest.raises(MissingWeightsError, match="picbench-test/not-a-model"):
        PositionICPipeline.from_pretrained("picbench-test/not-a-model", local_files_only=True, cache_dir=str(tmp_path / "hub"))
