"""LoRA on the FLUX transformer: peft/diffusers-format files, and UNO's released LoRA.

PositionIC's own LoRA (rank 512 in the paper, not released) is trained and saved in the
diffusers/peft format (`pytorch_lora_weights.safetensors`, keys
`transformer.<module>.lora_A.weight` / `.lora_B.weight`) and loads with :func:`load_lora`.

UNO's released LoRA (`dit_lora.safetensors` in the hub repo `bytedance-research/UNO`) is a state
dict of the attention processors that UNO's code (github.com/bytedance/UNO, `uno/flux/util.py`
`set_lora` and `uno/flux/modules/layers.py`, XLabs-style processors) installs on *every* block of
Black Forest Labs' FLUX model, rank 512 (`lora_rank=512` in UNO's `app.py`), no alpha (scale 1).
(`app.py` was read in bytedance/UNO itself; the two `uno/flux` files in public copies of UNO's
code, as the searchable index holds only part of that repository.)
Each `LoRALinearLayer` holds `down` (in -> rank) and `up` (rank -> out), both without bias, and
adds `up(down(x))` to the wrapped projection. Its key layout and our diffusers/peft names:

| UNO key (`<...>.down.weight` / `.up.weight`)   | wraps BFL's               | diffusers module (`lora_A` / `lora_B`)            |
|------------------------------------------------|---------------------------|---------------------------------------------------|
| `double_blocks.{i}.processor.qkv_lora1`        | `img_attn.qkv` (3*dim out)| `transformer_blocks.{i}.attn.to_q`, `to_k`, `to_v` |
| `double_blocks.{i}.processor.proj_lora1`       | `img_attn.proj`           | `transformer_blocks.{i}.attn.to_out.0`             |
| `double_blocks.{i}.processor.qkv_lora2`        | `txt_attn.qkv`            | `transformer_blocks.{i}.attn.add_q_proj`, `add_k_proj`, `add_v_proj` |
| `double_blocks.{i}.processor.proj_lora2`       | `txt_attn.proj`           | `transformer_blocks.{i}.attn.to_add_out`           |
| `single_blocks.{i}.processor.qkv_lora`         | q,k,v part of `linear1`   | `single_transformer_blocks.{i}.attn.to_q`, `to_k`, `to_v` |
| `single_blocks.{i}.processor.proj_lora`        | `linear2` (in: attn ++ mlp)| `single_transformer_blocks.{i}.proj_out`          |

A fused qkv LoRA becomes three LoRAs that share `down` as `lora_A` and take consecutive thirds
of `up`'s rows as `lora_B` (BFL packs q, k, v in that order along the output). This is the XLabs
layout diffusers already converts (`FluxLoraLoaderMixin.lora_state_dict` detects the
`.processor.` keys), so we validate the layout strictly here and let diffusers rename.

At inference a loaded LoRA computes as UNO's `LoRALinearLayer` (bytedance/UNO @ d305981,
`uno/flux/modules/layers.py:115-125`, added at :204, :211, :224, :228, :333, :343): its weights
keep the file's dtype (UNO loads them with `assign=True`, `uno/flux/util.py:290,311`), the input
is cast to that dtype, `up(down(x))` is cast back to the input's dtype, multiplied by the weight
and added to the base projection in the model's dtype. peft instead keeps adapters in float32 and
adds before casting back, which in bfloat16 rounds differently (:class:`UnoLoraArithmetic`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from peft.tuners.lora.layer import LoraLayer, LoraVariant
from safetensors.torch import load_file

from picbench.errors import MissingWeightsError

UNO_LORA_REPO = "bytedance-research/UNO"
UNO_LORA_FILE = "dit_lora.safetensors"
UNO_LORA_RANK = 512

_LORA_WEIGHT = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")
_UNO_KEY = re.compile(
    r"^(?:double_blocks\.(?P<d>\d+)\.processor\.(?:qkv|proj)_lora[12]"
    r"|single_blocks\.(?P<s>\d+)\.processor\.(?:qkv|proj)_lora)\.(?:down|up)\.weight$"
)


def uno_lora_layout(transformer: FluxTransformer2DModel, rank: int = UNO_LORA_RANK) -> dict[str, tuple[int, int]]:
    """The keys and shapes UNO's `set_lora` creates for a FLUX model of this config."""
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    mlp = int(dim * 4.0)  # FLUX's mlp_ratio; UNO hard-codes 15360 = 3072 + 4 * 3072
    shapes: dict[str, tuple[int, int]] = {}

    def add(prefix: str, n_in: int, n_out: int) -> None:
        shapes[f"{prefix}.down.weight"] = (rank, n_in)
        shapes[f"{prefix}.up.weight"] = (n_out, rank)

    for i in range(transformer.config.num_layers):
        for stream in ("1", "2"):
            add(f"double_blocks.{i}.processor.qkv_lora{stream}", dim, 3 * dim)
            add(f"double_blocks.{i}.processor.proj_lora{stream}", dim, dim)
    for i in range(transformer.config.num_single_layers):
        add(f"single_blocks.{i}.processor.qkv_lora", dim, 3 * dim)
        add(f"single_blocks.{i}.processor.proj_lora", dim + mlp, dim)
    return shapes


def random_uno_lora(transformer: FluxTransformer2DModel, rank: int = 4, seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    """A randomly initialised state dict in UNO's released key layout (for tests and tiny runs)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * std for k, shape in uno_lora_layout(transformer, rank).items()}


def convert_uno_lora(state_dict: Mapping[str, torch.Tensor], *, source: str = "UNO LoRA") -> dict[str, torch.Tensor]:
    """UNO's key names -> diffusers/peft names (`transformer.<module>.lora_A/B.weight`).

    Refuses anything outside UNO's layout, naming `source` and the key, rather than loading a
    partial adapter silently."""
    if not state_dict:
        raise ValueError(f"{source}: empty state dict")
    for key, tensor in state_dict.items():
        if not _UNO_KEY.match(key):
            raise ValueError(f"{source}: key {key!r} is not in UNO's LoRA layout (double_blocks.N.processor.qkv_lora1.down.weight, ...)")
        pair = key[: -len("down.weight")] + "up.weight" if key.endswith(".down.weight") else key[: -len("up.weight")] + "down.weight"
        if pair not in state_dict:
            raise ValueError(f"{source}: {key!r} has no matching {pair!r}")
        if tensor.ndim != 2:
            raise ValueError(f"{source}: {key!r} must be a 2-D weight, got shape {tuple(tensor.shape)}")
    converted = FluxPipeline.lora_state_dict(dict(state_dict))
    return dict(converted)


def read_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"LoRA file {path} does not exist")
    return load_file(str(path))


def load_lora(
    pipe: FluxPipeline, lora: str | Path | Mapping[str, torch.Tensor], *, adapter_name: str = "positionic", scale: float = 1.0
) -> None:
    """Load a diffusers/peft-format FLUX LoRA (a local file or a state dict) into `pipe.transformer`."""
    state_dict = read_lora_file(lora) if isinstance(lora, (str, Path)) else dict(lora)
    if any(".processor." in k for k in state_dict):
        raise ValueError(f"{lora if isinstance(lora, (str, Path)) else 'LoRA'}: this is UNO's layout; use load_uno_lora")
    state_dict = dict(FluxPipeline.lora_state_dict(state_dict))  # kohya / ai-toolkit / peft names -> diffusers names
    _load_into_transformer(pipe.transformer, state_dict, adapter_name, scale)


def load_uno_lora(
    pipe: FluxPipeline, lora: str | Path | Mapping[str, torch.Tensor], *, adapter_name: str = "uno", scale: float = 1.0
) -> None:
    """Convert UNO's released LoRA (file or state dict) and load it into `pipe.transformer`."""
    source = str(lora) if isinstance(lora, (str, Path)) else "UNO LoRA"
    state_dict = read_lora_file(lora) if isinstance(lora, (str, Path)) else dict(lora)
    _load_into_transformer(pipe.transformer, convert_uno_lora(state_dict, source=source), adapter_name, scale)


def _load_into_transformer(
    transformer: FluxTransformer2DModel, state_dict: dict[str, torch.Tensor], adapter_name: str, scale: float
) -> None:
    """peft LoRA on the transformer only (keys `transformer.*`); the text encoders stay as they are.
    Each LoRA layer then computes as UNO's (:class:`UnoLoraArithmetic`) with the file's weights and dtype."""
    prefix = "transformer" if any(k.startswith("transformer.") for k in state_dict) else None
    transformer.load_lora_adapter(state_dict, prefix=prefix, adapter_name=adapter_name)
    transformer.set_adapters(adapter_name, scale)
    for key, tensor in state_dict.items():
        match = _LORA_WEIGHT.match(key.removeprefix("transformer."))
        if match is None:
            continue
        layer = transformer.get_submodule(match["module"])
        if adapter_name in layer.lora_variant and not isinstance(layer.lora_variant[adapter_name], UnoLoraArithmetic):
            continue  # a variant of its own (e.g. DoRA) keeps peft's arithmetic
        weight = getattr(layer, f"lora_{match['part']}")[adapter_name].weight
        weight.data = tensor.to(weight.device)
        layer.lora_variant[adapter_name] = UnoLoraArithmetic()


class UnoLoraArithmetic(LoraVariant):
    """UNO's LoRA branch on a peft layer: `base(x) + up(down(x.to(w))).to(x) * weight`, in that order
    (`uno/flux/modules/layers.py:115-125,204` @ d305981). Inference only: merging is not supported."""

    @staticmethod
    def forward(module: LoraLayer, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs: object) -> torch.Tensor:
        lora = module.lora_B[active_adapter](module.lora_A[active_adapter](x))  # x: already cast to the LoRA's dtype
        return result + lora.to(result.dtype) * module.scaling[active_adapter]


# -- training: UNO's parametrization under peft, saved in both layouts ----------------------------

UNO_TARGET_MODULES = (
    r"(transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
    r"|single_transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v)|proj_out))"
)
"""UNO's LoRA sites (`set_lora` on every block, see the table above) as a peft `target_modules` regex."""

_QKV_GROUPS = (("to_q", "to_k", "to_v"), ("add_q_proj", "add_k_proj", "add_v_proj"))


def add_trainable_lora(
    transformer: FluxTransformer2DModel,
    *,
    rank: int,
    init: str | Path | Mapping[str, torch.Tensor] | None,
    adapter_name: str = "positionic",
) -> list[torch.nn.Parameter]:
    """Put a trainable fp32 LoRA on UNO's sites and return its parameters (each once).

    `init`: UNO's released LoRA (a file or state dict in UNO's layout, whose rank must be `rank`),
    a diffusers/peft LoRA file, or None for peft's default init (A Kaiming, B zero; alpha = rank,
    i.e. scale 1 as UNO's LoRA has no alpha). UNO fuses q, k, v into one LoRA with a shared `down`:
    the three `lora_A` of each attention are tied to one parameter, so the LoRA trained here is
    exactly UNO's parametrization (about 0.96 B parameters at rank 512 on FLUX.1-dev) and saves
    losslessly in UNO's layout."""
    if init is None:
        from peft import LoraConfig

        transformer.add_adapter(
            LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True, target_modules=UNO_TARGET_MODULES), adapter_name
        )
    else:
        state = read_lora_file(init) if isinstance(init, (str, Path)) else dict(init)
        source = str(init) if isinstance(init, (str, Path)) else "initial LoRA"
        if any(".processor." in k for k in state):
            ranks = {t.shape[0] for k, t in state.items() if k.endswith(".down.weight")}
            if ranks != {rank}:
                raise ValueError(f"{source}: LoRA rank {sorted(ranks)} differs from the configured rank {rank}")
            state = convert_uno_lora(state, source=source)
        else:
            state = dict(FluxPipeline.lora_state_dict(state))
        prefix = "transformer" if any(k.startswith("transformer.") for k in state) else None
        transformer.load_lora_adapter(state, prefix=prefix, adapter_name=adapter_name)
    transformer.set_adapters(adapter_name)
    tie_qkv_down(transformer, adapter_name)
    params: dict[int, torch.nn.Parameter] = {}
    for name, param in transformer.named_parameters(remove_duplicate=False):
        if f".{adapter_name}." in name and "lora_" in name:
            param.data = param.data.float()
            param.requires_grad_(True)
            params[id(param)] = param
        else:
            param.requires_grad_(False)
    return list(params.values())


def tie_qkv_down(transformer: FluxTransformer2DModel, adapter_name: str) -> None:
    """Share one `lora_A` among q, k and v of each attention (UNO's fused-qkv `down`)."""
    for module in transformer.modules():
        for group in _QKV_GROUPS:
            layers = [getattr(module, n, None) for n in group]
            if all(layer is not None and hasattr(layer, "lora_A") and adapter_name in layer.lora_A for layer in layers):
                shared = layers[0].lora_A[adapter_name].weight
                for layer in layers[1:]:
                    layer.lora_A[adapter_name].weight = shared


def lora_state_dict(transformer: FluxTransformer2DModel, adapter_name: str = "positionic") -> dict[str, torch.Tensor]:
    """The adapter in diffusers' names (`transformer.<module>.lora_A.weight`, ...), fp32, untied copies."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    return {f"transformer.{k}": v.detach().float().cpu().clone().contiguous() for k, v in state.items()}


def to_uno_layout(state_dict: Mapping[str, torch.Tensor], transformer: FluxTransformer2DModel) -> dict[str, torch.Tensor]:
    """diffusers names -> UNO's released layout (the inverse of :func:`convert_uno_lora`).

    The q, k, v LoRAs of an attention must share `lora_A` (as :func:`add_trainable_lora` trains
    them); `up` is their `lora_B` stacked in q, k, v order."""
    out: dict[str, torch.Tensor] = {}

    def get(module: str, part: str) -> torch.Tensor:
        key = f"transformer.{module}.lora_{part}.weight"
        if key not in state_dict:
            raise ValueError(f"LoRA has no {key!r}: UNO's layout needs every UNO site")
        return state_dict[key]

    def fused(prefix: str, modules: Sequence[str]) -> None:
        downs = [get(m, "A") for m in modules]
        if any(not torch.equal(downs[0], d) for d in downs[1:]):
            raise ValueError(f"{modules[0]}: q, k and v LoRAs do not share lora_A, so they have no exact UNO (fused qkv) form")
        out[f"{prefix}.down.weight"] = downs[0]
        out[f"{prefix}.up.weight"] = torch.cat([get(m, "B") for m in modules])

    def single(prefix: str, module: str) -> None:
        out[f"{prefix}.down.weight"], out[f"{prefix}.up.weight"] = get(module, "A"), get(module, "B")

    for i in range(transformer.config.num_layers):
        attn = f"transformer_blocks.{i}.attn"
        fused(f"double_blocks.{i}.processor.qkv_lora1", [f"{attn}.to_q", f"{attn}.to_k", f"{attn}.to_v"])
        single(f"double_blocks.{i}.processor.proj_lora1", f"{attn}.to_out.0")
        fused(f"double_blocks.{i}.processor.qkv_lora2", [f"{attn}.add_q_proj", f"{attn}.add_k_proj", f"{attn}.add_v_proj"])
        single(f"double_blocks.{i}.processor.proj_lora2", f"{attn}.to_add_out")
    for i in range(transformer.config.num_single_layers):
        block = f"single_transformer_blocks.{i}"
        fused(f"single_blocks.{i}.processor.qkv_lora", [f"{block}.attn.to_q", f"{block}.attn.to_k", f"{block}.attn.to_v"])
        single(f"single_blocks.{i}.processor.proj_lora", f"{block}.proj_out")
    return out
