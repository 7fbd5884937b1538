"""InstanceDiffusion adapter: translation, UniFusion/ScaleU pieces, the released-checkpoint
loader on a random state dict in that key layout, a tiny end-to-end run on a real DreamBench
sample, and the offline missing-checkpoint error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from grounded_samples import BOXES, _one_thread, dreambench_multi_sample  # noqa: F401 (autouse fixture)

from picbench.adapters.instancediffusion import (
    OMEGACONF_CLASSES,
    TINY_FUSION_DIMS,
    InstanceDiffusionMethod,
    InstanceFusion,
    ScaleU,
    build_tiny_instancediffusion,
    fourier_embed,
    gated_unet_from_config,
    grounding_steps,
    initial_noise,
    instance_call,
    load_released_weights,
    low_frequency_scale,
    mis_steps,
    read_released_checkpoint,
    to_released_layout,
)
from picbench.errors import PicbenchError
from picbench.methods.sd_grounding import plms_step
from picbench.records import Sample, Subject
from picbench.tiny import sd as tiny


def _tiny_parts(seed: int):
    """A tiny gated UNet with InstanceFusion and its ScaleU, every parameter random."""
    torch.manual_seed(seed)
    unet = gated_unet_from_config(dict(tiny.tiny_sd_unet(32).config), InstanceFusion(**TINY_FUSION_DIMS))
    scaleu = ScaleU(ScaleU.join_channels(unet))
    with torch.no_grad():
        for p in (*unet.parameters(), *scaleu.parameters()):
            p.normal_(std=0.1)
    return unet.eval(), scaleu.eval()


def test_translation_uses_class_captions_and_boxes_not_references(data_dir: Path) -> None:
    sample = dreambench_multi_sample(data_dir, 1024, 1024)
    call = instance_call(sample, "a {class_word}", 512)
    assert call.prompt == "a backpack and a stuffed animal in the jungle"
    assert call.instance_captions == ("a backpack", "a stuffed animal")
    assert call.boxes == BOXES
    assert (call.width, call.height) == (512, 512)
    assert not hasattr(call, "reference_paths")
    assert InstanceDiffusionMethod.capabilities.references is False  # identity metrics: not applicable
    unboxed = Sample("u", "p", 64, 64, "single", (Subject("dog", "dog", ("x.jpg",)),))
    assert InstanceDiffusionMethod(models="tiny").supports(unboxed) is None  # it gets the fallback layout
    with pytest.raises(ValueError, match="sample u"):
        instance_call(unboxed, "a {class_word}", 512)
    assert instance_call(unboxed.with_fallback_layout(), "a {class_word}", 512).boxes == ((0.0, 0.0, 1.0, 1.0),)


def test_alpha_schedule_and_seeded_noise() -> None:
    assert grounding_steps(50, 0.75) == 37  # the authors' alpha_generator([0.75, 0, 0.25])
    assert mis_steps(50, 0.36) == 18  # PLMSSamplerInst: int(total_steps * mis)
    # diffusers' PNDM: 51 entries for 50 PLMS steps, its second timestep repeated; the authors'
    # step count maps entries so that alpha 0.75 grounds 37 steps (38 entries), mis 0.36 18 steps
    from diffusers import PNDMScheduler

    scheduler = PNDMScheduler(skip_prk_steps=True)
    scheduler.set_timesteps(50)
    entries = scheduler.timesteps.tolist()
    assert len(entries) == 51 and entries[1] == entries[2]
    steps = [plms_step(j) for j in range(len(entries))]
    assert steps[:3] == [0, 0, 1] and steps[-1] == 49 and len(set(steps)) == 50
    assert sum(s < grounding_steps(50, 0.75) for s in steps) == 38
    assert len({s for s in steps if s < mis_steps(50, 0.36)}) == 18


def test_instance_captions_are_the_bare_category_names() -> None:
    """frank-xwang/InstanceDiffusion @ 722900e, eval_local.py:248 cat_names = [cat["name"] ...] and
    :254 test_info['phrases'] = cat_names[:max_objs]; utils/input.py:140 each instance's prompt in
    the multi-instance sampler is its phrase. Since version 2: images captioned "a {class}" are not reused."""
    method = InstanceDiffusionMethod()
    assert method.params["instance_caption"] == "{class_word}" and method.version == "3"
    sample = Sample(
        "s",
        "a dog and a cat",
        512,
        512,
        "multi",
        (Subject("dog", "dog", (), box=BOXES[0]), Subject("cat2", "stuffed animal", (), box=BOXES[1])),
    )
    assert instance_call(sample, method.params["instance_caption"], 512).instance_captions == ("dog", "stuffed animal")


def test_defaults_are_the_authors_quantitative_evaluation() -> None:
    """frank-xwang/InstanceDiffusion @ 722900e: README's MSCOCO evaluation runs eval_local.py with
    --mis 0.36 --alpha 1.0; eval_local.py's --negative_prompt and --guidance_scale defaults."""
    params = InstanceDiffusionMethod().params
    assert (params["alpha"], params["mis"], params["steps"], params["guidance_scale"]) == (1.0, 0.36, 50, 7.5)
    assert params["negative_prompt"] == (
        "cartoon style, painting style, longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, "
        "fewer digits, cropped, worst quality, low quality"
    )
    assert grounding_steps(50, params["alpha"]) == 50
    with pytest.raises(ValueError, match="alpha"):
        InstanceDiffusionMethod(params={"alpha": 1.5})
    with pytest.raises(ValueError, match="mis"):
        InstanceDiffusionMethod(params={"mis": -0.1})
    torch.manual_seed(11)
    authors = torch.randn(1, 4, 64, 64)  # inference.py: torch.manual_seed(seed); torch.randn(...)
    assert torch.equal(initial_noise(11, 512, 512, 8), authors)
    assert not torch.equal(initial_noise(12, 512, 512, 8), authors)


def test_fourier_embedding_matches_gligen_order() -> None:
    coords = torch.rand(2, 3, 4)
    freqs = 100 ** (torch.arange(16) / 16)
    expected = torch.cat([fn(f * coords) for f in freqs for fn in (torch.sin, torch.cos)], dim=-1)
    assert torch.allclose(fourier_embed(coords, 16), expected, atol=1e-6)


def test_instance_fusion_tokens_and_padding() -> None:
    torch.manual_seed(0)
    fusion = InstanceFusion(**TINY_FUSION_DIMS).eval()
    with torch.no_grad():
        for p in fusion.parameters():
            p.normal_()
    boxes, masks, text = torch.rand(1, 30, 4), torch.zeros(1, 30), torch.randn(1, 30, 32)
    masks[0, :2] = 1
    objs = fusion(boxes, masks, text)
    assert objs.shape == (1, 4 * 30 + 64, 32)  # box, point, scribble, polygon tokens + 64 mask tokens
    moved = boxes.clone()
    moved[0, 5] = torch.rand(4)  # a padded slot: masked, so nothing changes
    assert torch.allclose(fusion(moved, masks, text), objs)
    moved[0, 1] = torch.rand(4)  # a real instance: its box and point tokens change
    changed = (fusion(moved, masks, text) - objs).abs().sum(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [1, 31]


def test_scaleu_identity_at_zero_and_low_frequency_filter() -> None:
    x = torch.randn(2, 8, 16, 16)
    assert torch.allclose(low_frequency_scale(x, torch.tensor(1.0)), x, atol=1e-5)
    assert low_frequency_scale(x, torch.tensor(0.0)).mean(dim=(-2, -1)).abs().max() < 1e-5  # DC removed
    unet, scaleu = _tiny_parts(0)
    sample, t, context = torch.randn(1, 4, 16, 16), torch.tensor(10), torch.randn(1, 7, 32)
    with torch.no_grad():
        plain = unet(sample, t, context).sample
        for p in scaleu.parameters():
            p.zero_()
        scaleu.attach(unet)
        assert torch.allclose(unet(sample, t, context).sample, plain, atol=1e-5)  # tanh(0) + 1 = 1
        scaleu.scaleu_b_0.fill_(1.0)
        assert not torch.allclose(unet(sample, t, context).sample, plain, atol=1e-3)


def test_loader_reads_released_key_layout(tmp_path: Path) -> None:
    source_unet, source_scaleu = _tiny_parts(1)
    released = to_released_layout(source_unet, source_scaleu)
    # names as InstanceDiffusion's LDM UNetModel writes them (2 levels, 1 layer per level here)
    for key in (
        "time_embed.0.weight",
        "input_blocks.0.0.weight",
        "input_blocks.1.0.in_layers.2.weight",
        "input_blocks.1.1.transformer_blocks.0.fuser.alpha_attn",
        "input_blocks.1.1.transformer_blocks.0.fuser.attn.to_out.0.weight",
        "input_blocks.2.0.op.weight",
        "middle_block.1.transformer_blocks.0.fuser.linear.weight",
        "middle_block.2.emb_layers.1.weight",
        "output_blocks.1.2.conv.weight",
        "output_blocks.3.1.transformer_blocks.0.fuser.ff.net.0.proj.weight",
        "out.2.weight",
        "position_net.linears_list.0.0.weight",
        "position_net.linears_list.4.4.bias",
        "position_net.null_polygon_feature",
        "position_net.pos_embedding",
        "scaleu_b_0",
        "scaleu_s_3",
    ):
        assert key in released, key
    assert not any(k.startswith(("down_blocks", "up_blocks", "mid_block")) for k in released)
    # the released file also carries the mask branch, unused for boxes
    released["position_net.in_conv.weight"] = torch.randn(3, 30, 3, 3)
    released["position_net.convnext_tiny_backbone.stem.0.weight"] = torch.randn(96, 3, 4, 4)
    path = tmp_path / "instancediffusion_sd15.pth"
    torch.save({"model": {k: torch.zeros_like(v) for k, v in released.items()}, "ema": released}, path)

    target_unet, target_scaleu = _tiny_parts(2)
    load_released_weights(target_unet, target_scaleu, read_released_checkpoint(path))  # prefers "ema"
    expected = {**source_unet.state_dict(), **{f"scaleu.{k}": v for k, v in source_scaleu.state_dict().items()}}
    loaded = {**target_unet.state_dict(), **{f"scaleu.{k}": v for k, v in target_scaleu.state_dict().items()}}
    assert expected.keys() == loaded.keys()
    assert all(torch.equal(expected[k], loaded[k]) for k in expected)

    del released["input_blocks.1.1.transformer_blocks.0.fuser.alpha_dense"]
    with pytest.raises(PicbenchError, match="fuser.alpha_dense"):
        load_released_weights(*_tiny_parts(3), released)


class _TrainingConfig:
    """A class no released container holds: it must be refused, not imported or built."""


class _RunsCode:
    """A pickle that would run a shell command when unpickled by a plain ``pickle.load``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_released_container_with_omegaconf_config_loads(tmp_path: Path) -> None:
    """The authors' save_ckpt form: state dicts, optimizer and scheduler state, and
    ``config_dict = vars(DictConfig)``, read back without omegaconf code running."""
    omegaconf = pytest.importorskip("omegaconf")  # a dev dependency: writes the container for real
    config = omegaconf.OmegaConf.create(
        {
            "model": {
                "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                "params": {"image_size": 64, "fuser_type": "gatedSA", "channel_mult": [1, 2, 4, 4]},
            },
            "base_learning_rate": 5e-5,
            "enable_ema": True,
        }
    )
    ema = {"scaleu_b_0": torch.randn(4)}
    path = tmp_path / "instancediffusion_sd15.pth"
    torch.save(
        {
            "model": {"scaleu_b_0": torch.zeros(4)},
            "ema": ema,
            "opt": {"state": {}, "param_groups": [{"lr": 5e-5, "params": [0]}]},
            "scheduler": {"last_epoch": 3, "lr_lambdas": [None]},
            "iters": 4,
            "config_dict": vars(config),
        },
        path,
    )
    loaded = read_released_checkpoint(path)
    assert loaded.keys() == {"scaleu_b_0"} and torch.equal(loaded["scaleu_b_0"], ema["scaleu_b_0"])
    saved = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert {"omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.nodes.AnyNode"} <= set(saved)
    assert set(saved) - {"typing.Any", "builtins.dict", "builtins.list", "builtins.int", "collections.defaultdict"} <= set(
        OMEGACONF_CLASSES
    )


def test_any_other_pickled_class_is_refused_without_running_it(tmp_path: Path) -> None:
    pickled = tmp_path / "with_objects.pth"
    torch.save({"model": {"scaleu_b_0": torch.zeros(2)}, "config_dict": _TrainingConfig()}, pickled)
    with pytest.raises(PicbenchError, match="_TrainingConfig") as info:
        read_released_checkpoint(pickled)
    assert str(pickled) in str(info.value) and "refused" in str(info.value)
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pth"
    torch.save({"model": {"scaleu_b_0": torch.zeros(2)}, "config_dict": _RunsCode(marker)}, hostile)
    with pytest.raises(PicbenchError, match="system"):
        read_released_checkpoint(hostile)
    assert not marker.exists()
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(PicbenchError, match="neither an 'ema' nor a 'model'.*state_dict"):
        read_released_checkpoint(other)


def test_end_to_end_tiny(data_dir: Path) -> None:
    from diffusers.models.attention import GatedSelfAttentionDense

    method = InstanceDiffusionMethod(models="tiny", params={"steps": 2, "resolution": 32, "alpha": 0.5, "mis": 0.5})
    assert method.smoke
    sample = dreambench_multi_sample(data_dir)
    model = method.load()
    fuser = next(m for m in model.unet.modules() if isinstance(m, GatedSelfAttentionDense))
    calls: list[tuple[bool, bool]] = []  # per UNet call: fuser on, SD 1.5's conv_in in place
    fuser.register_forward_pre_hook(
        lambda module, args: calls.append((module.enabled, torch.equal(model.unet.conv_in.weight, model.sd_conv_in["weight"])))
    )
    first = method.generate([sample], seed=5, data_root=data_dir)
    assert first[0].size == (64, 64) and first[0].mode == "RGB"
    # 2 steps = 3 PNDM timesteps; the authors' step 0 (entries 0 and 1) grounded with
    # InstanceDiffusion's conv_in, run by the full layout and each of the 2 instances
    # (multi-instance sampling), then step 1: one merged branch, grounding off, SD 1.5's conv_in
    assert calls == [(True, False)] * 6 + [(False, True)] * 1
    assert not torch.equal(model.unet.conv_in.weight, model.sd_conv_in["weight"])  # restored after
    plain = InstanceDiffusionMethod(models="tiny", params={"steps": 2, "resolution": 32, "alpha": 0.5, "mis": 0.0})
    single = plain.generate([sample], seed=5, data_root=data_dir)
    assert not np.array_equal(np.asarray(first[0]), np.asarray(single[0]))  # the instance branches count


def test_released_files_load_from_weights_dir(data_dir: Path, tmp_path: Path) -> None:
    """The non-smoke path: the released file and the SD 1.5 folder found under --weights-dir
    (tiny random contents in the released formats), widths read off the checkpoint."""
    built = build_tiny_instancediffusion(tmp_path / "built")
    weights = tmp_path / "weights"
    (weights / "xudongw" / "InstanceDiffusion").mkdir(parents=True)
    (weights / "xudongw" / "InstanceDiffusion" / "instancediffusion_sd15.pth").symlink_to(built / "instancediffusion_sd15.pth")
    (weights / "stable-diffusion-v1-5").mkdir()
    (weights / "stable-diffusion-v1-5" / "stable-diffusion-v1-5").symlink_to(built, target_is_directory=True)
    method = InstanceDiffusionMethod(params={"steps": 2, "resolution": 32, "mis": 0.0}, weights_dir=weights)
    assert not method.smoke
    images = method.generate([dreambench_multi_sample(data_dir, 40, 48)], seed=0, data_root=data_dir)
    assert images[0].size == (40, 48)


def test_sd15_topology_layout_and_scaleu_joins() -> None:
    """SD 1.5's UNet shape (4 levels, 2 layers each, plain last down / first up block) at toy
    widths: the names and ScaleU sizes a released checkpoint has, and a strict round trip."""
    from diffusers import UNet2DConditionModel

    config = dict(
        sample_size=16,
        block_out_channels=(16, 32, 48, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=16,
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    torch.manual_seed(0)
    unet = gated_unet_from_config(dict(UNet2DConditionModel(**config).config), InstanceFusion(**TINY_FUSION_DIMS))
    # the authors' UNetModel: scaleu_b_i has the backbone width entering output block i
    assert ScaleU.join_channels(unet) == [64, 64, 64, 64, 48, 48, 48, 32, 32, 32, 16, 16]
    scaleu = ScaleU(ScaleU.join_channels(unet))
    released = to_released_layout(unet, scaleu)
    for key in (
        "input_blocks.3.0.op.weight",
        "input_blocks.9.0.op.weight",
        "input_blocks.11.0.out_layers.3.weight",
        "input_blocks.7.1.transformer_blocks.0.fuser.alpha_dense",
        "output_blocks.0.0.skip_connection.weight",
        "output_blocks.2.1.conv.weight",  # UpBlock2D: upsampler right after the resnet
        "output_blocks.5.2.conv.weight",
        "output_blocks.8.2.conv.weight",
        "output_blocks.11.1.transformer_blocks.0.fuser.linear.weight",
        "scaleu_b_11",
    ):
        assert key in released, key
    assert not any(k.startswith(("input_blocks.10.1", "input_blocks.11.1", "output_blocks.0.1", "output_blocks.11.2")) for k in released)
    torch.manual_seed(1)
    fresh = gated_unet_from_config(dict(unet.config), InstanceFusion(**TINY_FUSION_DIMS))
    fresh_scaleu = ScaleU(ScaleU.join_channels(fresh))
    load_released_weights(fresh, fresh_scaleu, released)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in unet.state_dict().items())
