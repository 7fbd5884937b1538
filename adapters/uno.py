"""``uno``: UNO (Wu et al., ICCV 2025) as the PositionIC pipeline in UNO mode: FLUX.1-dev + UNO's
released LoRA + UnoPE, with VAA off. UNO takes no boxes, so boxes and depth ranks are ignored.

Inputs as UNO's own inference builds them (github.com/bytedance/UNO: `app.py` @ 39ce7c7,
README @ 128ea80, `uno/flux/pipeline.py` and `uno/flux/sampling.py` @ d305981):
- one reference per subject, in subject order, resized so its long side is 512 for one
  reference, 320 for two, 256 for more (app.py's "1->512 / 2->320 / 3...n->256"; README: 512
  single-subject, 320 multi-subject), the short side floored and both cropped to multiples of
  16 (`preprocess_ref`: `int(long_size / long * short)`, then `// 16 * 16` center crop);
- 25 steps, guidance 4.0 (app.py's defaults), output at the Sample's size (UNO trains at 512);
- the time shift of `UNOPipeline.forward`: `get_schedule(steps, (W // 8) * (H // 8) // (16 * 16))`,
  mu ~0.459 at 512x512 (`reference_impl/schedule.py`; diffusers' rule would give 0.63);
- LoRA rank 512 (`UNOPipeline(..., only_lora=True, lora_rank=512)`), from `bytedance-research/UNO`
  `dit_lora.safetensors`, converted to diffusers names (`reference_impl/lora.py` documents the map);
- UnoPE's diagonal offsets (UNO's default position mode `pe='d'`).
Not reproduced bit for bit: the seed draws noise through `torch.Generator().manual_seed(seed)`
on the CPU (UNO draws it on the GPU), and references are encoded to the VAE mean, not a sample.
`--models tiny` loads a random LoRA written in UNO's key layout (or the ``lora`` file, or
``--weights-dir DIR/UNO/dit_lora.safetensors``), so tiny runs go through the same conversion as
the real weights.
"""

from __future__ import annotations

from typing import Any

from picbench.methods.base import Capabilities
from picbench.methods.positionic import FLUX_DEV, UNO_LORA, UNO_LORA_CHECKPOINT, PositionICMethod


class UnoMethod(PositionICMethod):
    name = "uno"
    version = "2"  # 2: UNO's sampling shift and reference resize (floor)
    capabilities = Capabilities(references=True, boxes=False, multi_subject=True, depth_order=False)
    default_params = {
        "steps": 25,
        "guidance": 4.0,
        "ref_long_side": None,
        "schedule": "uno",
        "base": FLUX_DEV,
        "lora": UNO_LORA,
        "lora_scale": 1.0,
    }
    checkpoints = {"base": FLUX_DEV, "lora": UNO_LORA_CHECKPOINT}
    uses_vaa = False

    def _call_params(self) -> dict[str, Any]:
        p = self.params
        return {
            "num_inference_steps": int(p["steps"]),
            "guidance_scale": float(p["guidance"]),
            "ref_long_side": p["ref_long_side"],
            "schedule": str(p["schedule"]),
        }
