"""Stage capture on a diffusers FLUX pipeline (both sides of the DreamO comparison: the authors'
``DreamOPipeline`` is a diffusers ``FluxPipeline``, as picbench's DreamO is built on one). Hooks
only: the transformer's inputs and outputs per call, the VAE decoder's input, and the VAE
posterior's noise (recorded on one side, replayed on the other: the authors draw it from the
unseeded global RNG)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class FluxCapture:
    """Per transformer call: ``timesteps``, ``guidance``, ``step_inputs`` and ``predictions`` (the
    first ``n_target`` tokens); at the first call ``prompt_embeds``, ``pooled``, ``txt_ids``,
    ``img_ids``, ``noise`` and ``ref_tokens``; ``latents``: what the VAE decodes; ``draws``: the
    posterior noise of each reference encoding."""

    def __init__(self, pipe: Any, n_target: int, replay: Sequence[torch.Tensor] | None = None) -> None:
        import diffusers.models.autoencoders.vae as diffusers_vae

        self.n_target = n_target
        self.stages: dict[str, torch.Tensor] = {}
        self.steps: dict[str, list[torch.Tensor]] = {"timesteps": [], "guidance": [], "step_inputs": [], "predictions": []}
        self.draws: list[torch.Tensor] = []
        self._replay = list(replay) if replay is not None else None
        self._handle = pipe.transformer.register_forward_hook(self._step, with_kwargs=True)
        self._vae_module, self._randn = diffusers_vae, diffusers_vae.randn_tensor
        diffusers_vae.randn_tensor = self._posterior_noise
        self._pipe, self._decode = pipe, pipe.vae.decode
        pipe.vae.decode = self._decode_recorded

    def _posterior_noise(self, shape: Any, generator: Any = None, device: Any = None, dtype: Any = None, **kwargs: Any) -> torch.Tensor:
        if self._replay is not None:
            noise = self._replay.pop(0).to(device=device, dtype=dtype)
            if tuple(noise.shape) != tuple(shape):
                raise ValueError(f"replayed posterior noise has shape {tuple(noise.shape)}, the encoder asks for {tuple(shape)}")
        else:
            noise = self._randn(shape, generator=generator, device=device, dtype=dtype, **kwargs)
        self.draws.append(noise.detach().clone())
        return noise

    def _decode_recorded(self, latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self.stages["latents"] = latents.detach().clone()
        return self._decode(latents, *args, **kwargs)

    def _step(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        hidden = kwargs["hidden_states"]
        if not self.steps["timesteps"]:
            self.stages.update(
                prompt_embeds=kwargs["encoder_hidden_states"].clone(),
                pooled=kwargs["pooled_projections"].clone(),
                txt_ids=kwargs["txt_ids"].reshape(-1, 3).clone(),
                img_ids=kwargs["img_ids"].reshape(-1, 3).clone(),
                noise=hidden[:, : self.n_target].clone(),
                ref_tokens=hidden[:, self.n_target :].clone(),
            )
        self.steps["timesteps"].append(kwargs["timestep"].reshape(-1)[:1].clone())
        guidance = kwargs.get("guidance")
        self.steps["guidance"].append(guidance.reshape(-1)[:1].clone() if guidance is not None else torch.zeros(1))
        self.steps["step_inputs"].append(hidden[:, : self.n_target].clone())
        self.steps["predictions"].append(output[0][:, : self.n_target].clone())

    def result(self) -> dict[str, torch.Tensor]:
        """The stages (and the posterior draws as ``draw.<i>``); the hooks are removed."""
        self._handle.remove()
        self._vae_module.randn_tensor = self._randn
        self._pipe.vae.decode = self._decode
        out = {**self.stages, **{k: torch.stack(v) for k, v in self.steps.items() if v}}
        return out | {f"draw.{i}": d for i, d in enumerate(self.draws)}
