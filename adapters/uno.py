"""``uno``: UNO (Wu et al., ICCV 2025) as the PositionIC pipeline in UNO mode: FLUX.1-dev + UNO's
released LoRA + UnoPE, with VAA off. UNO takes no boxes, so boxes and depth ranks are ignored.

Inputs and arithmetic as UNO's own inference (bytedance/UNO @ d305981: `inference.py`,
`uno/flux/pipeline.py`, `uno/flux/sampling.py`):
- one reference per subject, in subject order, resized so its long side is 512 for one
  reference and 320 for two or more (`inference.py:94-95`, `uno/flux/pipeline.py:225`), the short
  side floored and both cropped to multiples of 16 (`preprocess_ref`, `uno/flux/pipeline.py:70-98`);
  each encoded by the float32 VAE to a posterior sample, then cast (`uno/flux/pipeline.py:266-272`;
  UNO draws the sample from the unseeded global RNG, picbench from the item's seed);
- 25 steps, guidance 4.0 (`inference.py:54-55`), output at the Sample's size (UNO trains at 512);
- the time shift of `UNOPipeline.forward`: `get_schedule(steps, (W // 8) * (H // 8) // (16 * 16))`,
  mu ~0.459 at 512x512 (`uno/flux/pipeline.py:259-263`, `reference_impl/schedule.py`);
- in bfloat16, UNO's rounding: the time cast to the model dtype before the x1000 of the embedding,
  the Euler update `img + (t_prev - t_curr) * pred` in the model dtype (`uno/flux/sampling.py:226-239`),
  the LoRA branch in the LoRA file's dtype (`reference_impl/lora.py`), the image decoded in
  float32 and truncated to 8 bits (`uno/flux/pipeline.py:297-303`);
- the VAE computing as BFL's `AutoEncoder` that UNO runs (`uno/flux/modules/autoencoder.py:36-67`:
  `x * sigmoid(x)`, the mid-block attention through 1x1 convolutions; `reference_impl/bfl_vae.py`);
- the initial noise drawn in the model dtype from a generator on the device seeded with the seed
  (`uno/flux/sampling.py:28-45` via `uno/flux/pipeline.py:255-258`), so on CUDA a seed gives the
  image UNO's `inference.py` gives for it (``noise=float32``: picbench's earlier CPU draw);
- LoRA rank 512 (`inference.py:60`), from `bytedance-research/UNO` `dit_lora.safetensors`,
  converted to diffusers names (`reference_impl/lora.py` documents the map);
- UnoPE's diagonal offsets (UNO's default position mode `pe='d'`).
What still differs from UNO's scripts is listed in docs/methods.md.
`--models tiny` loads a random LoRA written in UNO's key layout (or the ``lora`` file, or
``--weights-dir DIR/UNO/dit_lora.safetensors``), so tiny runs go through the same conversion as
the real weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from picbench.adapters.positionic import FLUX_DEV, UNO_LORA, UNO_LORA_CHECKPOINT, PositionICMethod
from picbench.methods.base import Capabilities

if TYPE_CHECKING:
    from picbench.reference_impl.vaa import VAASettings


class UnoMethod(PositionICMethod):
    name = "uno"
    version = "3"  # 3: UNO's reference sizes (320 for 3+), bf16 arithmetic, posterior refs, device noise, .byte(); 2: shift, resize
    capabilities = Capabilities(references=True, boxes=False, multi_subject=True, depth_order=False)
    default_params = {
        "steps": 25,
        "guidance": 4.0,
        "ref_long_side": None,
        "schedule": "uno",
        "base": FLUX_DEV,
        "lora": UNO_LORA,
        "lora_scale": 1.0,
        "noise": "uno",
    }
    checkpoints = {"base": FLUX_DEV, "lora": UNO_LORA_CHECKPOINT}
    uses_vaa = False

    def _call_params(self) -> dict[str, Any]:
        """positionic's sampler, with the 8-bit image truncated as UNO's `.byte()` writes it."""
        return {**super()._call_params(), "to_8bit": "truncate"}

    def _vaa_settings(self) -> VAASettings:
        """VAA off (UNO's plain attention)."""
        from picbench.reference_impl.vaa import VAASettings

        return VAASettings(vaa=False)
