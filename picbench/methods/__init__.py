"""Generation methods by name. Built-ins and the baseline adapters are registered here; other
packages add methods through the ``picbench.methods`` entry-point group."""

from __future__ import annotations

from picbench.methods.base import Capabilities, Method
from picbench.registry import Registry

METHODS: Registry[type[Method]] = Registry("method", entry_point_group="picbench.methods", base=Method)

METHODS.register("positionic", "picbench.adapters.positionic:PositionICMethod", "reference PositionIC on FLUX (UnoPE + VWR + VAA)")
METHODS.register(
    "paste", "picbench.methods.paste:PasteMethod", "references pasted into their boxes: layout upper bound, realism lower bound"
)
METHODS.register("images", "picbench.methods.images:ImagesMethod", "scores images already on disk")
METHODS.register("gligen", "picbench.adapters.gligen:GligenMethod", "GLIGEN (SD 1.x, text+image grounding)")
METHODS.register(
    "instancediffusion",
    "picbench.adapters.instancediffusion:InstanceDiffusionMethod",
    "InstanceDiffusion (boxes + instance captions, no references)",
)
METHODS.register("msdiffusion", "picbench.adapters.msdiffusion:MSDiffusionMethod", "MS-Diffusion (SDXL, grounding resampler)")
METHODS.register("uno", "picbench.adapters.uno:UnoMethod", "UNO (FLUX + LoRA + UnoPE; PositionIC pipeline with VAA off)")
METHODS.register("dreamo", "picbench.adapters.dreamo:DreamOMethod", "DreamO (FLUX + LoRAs + task/index embeddings)")

__all__ = ["METHODS", "Capabilities", "Method"]
