"""``uno``: UNO (Wu et al., ICCV 2025) as the PositionIC pipeline in UNO mode: FLUX.1-dev + UNO's
released LoRA + UnoPE, with VAA off. UNO takes no boxes, so boxes and depth ranks are ignored.

Inputs as UNO's own inference builds them (github.com/bytedance/UNO: `app.py` @ 39ce7c7,
README @ 128ea80):
- one reference per subject, in subject order, resized so its long side is 512 for one
  reference, 320 for two, 256 for more (app.py's "1->512 / 2->320 / 3...n->256"; README: 512
  single-subject, 320 multi-subject), cropped to multiples of 16;
- 25 steps, guidance 4.0 (app.py's defaults), output at the Sample's size (UNO trains at 512);
- LoRA rank 512 (`UNOPipeline(..., only_lora=True, lora_rank=512)`), from `bytedance-research/UNO`
  `dit_lora.safetensors`, converted to diffusers names (`reference_impl/lora.py` documents the map);
- UnoPE's diagonal offsets (UNO's default position mode `pe='d'`, seen in copies of its inference code).
Not reproduced bit for bit: the seed draws noise through `torch.Generator().manual_seed(seed)`
on the CPU (UNO draws it on the GPU), and references are encoded to the VAE mean, not a sample.
`--models tiny` loads a random LoRA written in UNO's key layout (or the ``lora`` file, if given),
so tiny runs go through the same conversion as the real weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from picbench.errors import MissingWeightsError
from picbench.methods.base import Capabilities
from picbench.methods.positionic import FLUX_DEV, PositionICMethod


class UnoMethod(PositionICMethod):
    name = "uno"
    version = "1"
    capabilities = Capabilities(references=True, boxes=False, multi_subject=True, depth_order=False)
    default_params = {"steps": 25, "guidance": 4.0, "ref_long_side": None, "base": FLUX_DEV, "lora": None, "lora_scale": 1.0}
    checkpoints = {"base": FLUX_DEV, "lora": "bytedance-research/UNO/dit_lora.safetensors"}
    uses_vaa = False

    def _call_params(self) -> dict[str, Any]:
        return {"steps": int(self.params["steps"]), "guidance": float(self.params["guidance"]), "ref_long_side": self.params["ref_long_side"]}

    def _build(self) -> Any:
        from picbench.reference_impl.lora import random_uno_lora
        from picbench.reference_impl.pipeline import PositionICPipeline

        pipe = self._base_pipeline(PositionICPipeline)
        lora = self._lora_file() if self.params["lora"] or not self.smoke else random_uno_lora(pipe.transformer, rank=4)
        pipe.enable_uno_mode(lora, scale=float(self.params["lora_scale"]))
        return pipe

    def _lora_file(self) -> Path:
        """The ``lora`` parameter, else DIR/UNO/dit_lora.safetensors under weights_dir, else the hub cache."""
        from picbench.reference_impl.lora import UNO_LORA_FILE, UNO_LORA_REPO

        if self.params["lora"]:
            return Path(self._local(str(self.params["lora"])))
        local = Path(self._local(UNO_LORA_REPO))
        if local.is_dir():
            return local / UNO_LORA_FILE
        from huggingface_hub import constants, hf_hub_download

        try:
            return Path(hf_hub_download(UNO_LORA_REPO, UNO_LORA_FILE, local_files_only=constants.HF_HUB_OFFLINE))
        except OSError as exc:
            raise MissingWeightsError(
                f"method uno: {UNO_LORA_REPO}/{UNO_LORA_FILE} is not available locally and the hub could not be reached "
                f"({type(exc).__name__}); download it with `huggingface-cli download {UNO_LORA_REPO} {UNO_LORA_FILE} "
                f"--local-dir DIR/UNO` and pass --weights-dir DIR, or set the 'lora' parameter to the file"
            ) from exc
