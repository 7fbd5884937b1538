"""Attention processors that put Visibility-Aware Attention into diffusers' `FluxTransformer2DModel`.

One processor serves both FLUX block kinds: the double-stream blocks (separate text and image
projections, joined before attention) and the single-stream blocks (one projection over the
already joined sequence). Either way the attention runs over the joint sequence
`[text, target, ref_1 .. ref_K]`, so one prepared mask fits every block.

The mask reaches the processors per call through `joint_attention_kwargs={"vaa": JointMask(...)}`
(diffusers forwards those keyword arguments to every processor), so the model code is untouched
and one transformer can serve masked and unmasked calls. Without a mask the processor computes
exactly what diffusers' `FluxAttnProcessor` computes, through the same `dispatch_attention_fn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import FluxTransformer2DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb

VAA_KWARG = "vaa"
"""The `joint_attention_kwargs` key that carries a :class:`JointMask`."""


@dataclass(frozen=True)
class JointMask:
    """A masked-attention backend with its mask prepared for one token layout; call it on
    queries, keys and values shaped [batch, heads, tokens, head_dim]. With `per_sample`,
    `prepared` is a tuple holding one plan per batch element (training batches mix boxes)."""

    backend: Any
    prepared: Any
    per_sample: bool = False

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        if not self.per_sample:
            return self.backend(query, key, value, self.prepared)
        if len(self.prepared) != query.shape[0]:
            raise ValueError(f"JointMask has {len(self.prepared)} per-sample plans for a batch of {query.shape[0]}")
        return torch.cat([self.backend(query[i : i + 1], key[i : i + 1], value[i : i + 1], plan) for i, plan in enumerate(self.prepared)])


class PositionICAttnProcessor:
    """Drop-in for diffusers' `FluxAttnProcessor` that routes attention through a :class:`JointMask`
    when one is given. Projections, QK-norm and rotary embedding are applied as diffusers applies
    them, so LoRA layers that peft puts on `to_q`/`to_k`/... work unchanged."""

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        vaa: JointMask | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if getattr(attn, "fused_projections", False):
            raise RuntimeError("PositionICAttnProcessor needs unfused projections: call transformer.unfuse_qkv_projections()")
        if vaa is not None and attention_mask is not None:
            raise ValueError("give either a VAA joint mask or an attention_mask, not both")

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (-1, attn.head_dim))

        query = attn.norm_q(heads(attn.to_q(hidden_states)))
        key = attn.norm_k(heads(attn.to_k(hidden_states)))
        value = heads(attn.to_v(hidden_states))

        joint = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None
        if joint:
            query = torch.cat([attn.norm_added_q(heads(attn.add_q_proj(encoder_hidden_states))), query], dim=1)
            key = torch.cat([attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states))), key], dim=1)
            value = torch.cat([heads(attn.add_v_proj(encoder_hidden_states)), value], dim=1)

        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        if vaa is None:
            out = dispatch_attention_fn(
                query, key, value, attn_mask=attention_mask, backend=self._attention_backend, parallel_config=self._parallel_config
            )
        else:  # backends take [B, H, L, D]; diffusers keeps [B, L, H, D]
            out = vaa(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)).transpose(1, 2)
        out = out.flatten(2, 3).to(query.dtype)

        if encoder_hidden_states is None:
            return out
        n_text = encoder_hidden_states.shape[1]
        text_out, image_out = out[:, :n_text], out[:, n_text:]
        image_out = attn.to_out[1](attn.to_out[0](image_out.contiguous()))
        text_out = attn.to_add_out(text_out.contiguous())
        return image_out, text_out


def set_positionic_processors(transformer: FluxTransformer2DModel) -> None:
    """Install :class:`PositionICAttnProcessor` in every double- and single-stream block."""
    transformer.set_attn_processor(PositionICAttnProcessor())
