"""Stage capture on a diffusers Stable Diffusion pipeline (used on both sides when both sample
with diffusers' pipelines: MS-Diffusion's authors call diffusers' StableDiffusionXLPipeline, as
picbench does). Hooks only: the UNet's inputs and outputs per call, the VAE decoder's input."""

from __future__ import annotations

from typing import Any

import torch


class SDCapture:
    """Records, per UNet call, ``step_inputs``, ``timesteps``, ``predictions``; at the first call
    the conditioning (``prompt_embeds`` = the first ``text_tokens`` states, ``image_tokens`` = the
    rest, ``pooled``, ``time_ids``); ``latents``: what the VAE decodes."""

    def __init__(self, pipe: Any, text_tokens: int = 77) -> None:
        self.stages: dict[str, torch.Tensor] = {}
        self.steps: dict[str, list[torch.Tensor]] = {"timesteps": [], "step_inputs": [], "predictions": []}
        self.text_tokens = text_tokens
        self._handles = [pipe.unet.register_forward_hook(self._unet, with_kwargs=True)]
        decode = pipe.vae.decode

        def decode_recorded(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.stages["latents"] = latents.detach().float().clone()
            return decode(latents, *args, **kwargs)

        pipe.vae.decode = decode_recorded

    def _unet(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        sample = kwargs.get("sample", args[0] if args else None)
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        states = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        if not self.steps["timesteps"]:
            added = kwargs.get("added_cond_kwargs") or {}
            self.stages["prompt_embeds"] = states[:, : self.text_tokens].clone()
            self.stages["image_tokens"] = states[:, self.text_tokens :].clone()
            for key, name in (("text_embeds", "pooled"), ("time_ids", "time_ids")):
                if key in added:
                    self.stages[name] = added[key].clone()
        self.steps["timesteps"].append(torch.as_tensor(timestep).reshape(-1)[:1].double().clone())
        self.steps["step_inputs"].append(sample.clone())
        self.steps["predictions"].append((output[0] if isinstance(output, tuple) else output.sample).clone())

    def result(self) -> dict[str, torch.Tensor]:
        for handle in self._handles:
            handle.remove()
        return {**self.stages, **{k: torch.stack(v) for k, v in self.steps.items() if v}}
