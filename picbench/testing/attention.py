"""The attention-backend suite: every backend computes the one VAA semantics,
:func:`picbench.reference_impl.vaa.dense_vaa_mask` added to softmax attention, written out here.

- declaration: the registered name, ``backward_devices`` a set of device types;
- masked: on each case (one, two and three references; borders, overlaps, a one-token box, both
  coverage rules; every case one sequence length, so a compiling backend compiles once) the output
  equals ``softmax(q k^T / sqrt(d) + mask) v`` within 1e-5 in float32, shape kept, no NaN;
- unmasked (``prepare(layout, None)``): plain attention;
- backward, on a device type the backend lists in ``backward_devices``: the gradient equals the
  written-out attention's."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from picbench.reference_impl import TokenLayout, dense_vaa_mask, volume_weights
from picbench.reference_impl.attention import ATTENTION_BACKENDS, MaskedAttention
from picbench.testing.registries import require, resolve

LENGTH, BLOCK, TARGET = 320, 32, (12, 12)
# name -> (boxes, reference token grids, coverage rule); depth: later boxes in front
CASES: dict[str, tuple[list[tuple[float, float, float, float]], list[tuple[int, int]], str]] = {
    "two-refs-overlap": ([(0.1, 0.1, 0.6, 0.7), (0.4, 0.3, 1.0, 1.0)], [(8, 8), (6, 6)], "any"),
    "one-ref-border-box": ([(0.0, 0.0, 1.0, 0.5)], [(8, 8)], "any"),
    "three-refs-single-token-box": (
        [(0.0, 0.5, 0.5, 1.0), (0.45, 0.45, 0.46, 0.46), (0.3, 0.0, 1.0, 0.8)],
        [(6, 6), (4, 4), (5, 7)],
        "any",
    ),
    "three-refs-fraction-coverage": (
        [(0.05, 0.05, 0.55, 0.62), (0.33, 0.41, 0.97, 0.93), (0.0, 0.7, 0.4, 1.0)],
        [(6, 6), (5, 5), (4, 6)],
        "fraction",
    ),
}
ATOL = 1e-5


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, written out."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1) @ v


def case_layout(name: str) -> tuple[TokenLayout, torch.Tensor]:
    boxes, refs, coverage = CASES[name]
    n_image = TARGET[0] * TARGET[1] + sum(h * w for h, w in refs)
    layout = TokenLayout(LENGTH - n_image, TARGET, tuple(refs))
    return layout, volume_weights(boxes, list(range(len(boxes)))[::-1], TARGET, coverage=coverage)


def backend_class(entry: str | type[MaskedAttention]) -> tuple[str, type[MaskedAttention], str]:
    name, cls, label = resolve(ATTENTION_BACKENDS, entry)
    require(isinstance(cls, type) and issubclass(cls, MaskedAttention), label, "is not a MaskedAttention subclass")
    return name, cls, label


def _close(label: str, out: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    require(out.shape == expected.shape, label, f"{what}: output shape {list(out.shape)}, expected {list(expected.shape)}")
    require(not torch.isnan(out).any(), label, f"{what}: the output has NaNs")
    error = (out.float() - expected).abs().max().item()
    require(error <= ATOL, label, f"{what}: differs from dense_vaa_mask attention by {error:.2e} (tolerance {ATOL:g})")


def check_attention_backend(
    entry: str | type[MaskedAttention], device: str = "cpu", cases: Sequence[str] | None = None, *, unmasked: bool = True
) -> None:
    """Every check of the backend suite on ``device``; ``cases``: names in :data:`CASES` (default all),
    ``unmasked=False`` skips the unmasked call (for a compiling backend: one kernel less)."""
    name, cls, label = backend_class(entry)
    require(getattr(cls, "name", None) == name, label, f"its name attribute {getattr(cls, 'name', None)!r} is not its registered name")
    claims = cls.backward_devices
    require(
        isinstance(claims, frozenset) and all(isinstance(d, str) for d in claims),
        label,
        "backward_devices is not a frozenset of device types",
    )
    backend = cls(block_size=BLOCK)
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 2, LENGTH, 16, generator=gen).to(device) for _ in range(3))
    for case in cases if cases is not None else CASES:
        layout, weights = case_layout(case)
        out = backend(q, k, v, backend.prepare(layout, weights, device=device, dtype=torch.float32))
        _close(label, out.cpu(), reference_attention(q.cpu(), k.cpu(), v.cpu(), dense_vaa_mask(layout, weights)), f"case {case}")
    if unmasked:
        layout, _ = case_layout(next(iter(CASES)))
        out = backend(q, k, v, backend.prepare(layout, None, device=device, dtype=torch.float32))
        _close(label, out.cpu(), reference_attention(q.cpu(), k.cpu(), v.cpu(), None), "unmasked (weights None)")
    if torch.device(device).type in claims:
        check_backward(label, backend, device)


def check_backward(label: str, backend: MaskedAttention, device: str) -> None:
    """Gradients through the backend equal those through the written-out attention."""
    layout = TokenLayout(3, (4, 4), ((2, 2), (2, 3)))
    weights = volume_weights([(0, 0, 0.6, 0.6), (0.4, 0.4, 1, 1)], [0, 1], layout.target_hw)
    q = torch.randn(1, 2, layout.length, 8, generator=torch.Generator().manual_seed(5)).to(device).requires_grad_(True)
    try:
        backend(q, q, q, backend.prepare(layout, weights, device=device, dtype=torch.float32)).square().sum().backward()
    except RuntimeError as exc:
        raise AssertionError(f"{label}: claims a backward on {device}, but backward raised: {exc}") from exc
    q_ref = q.detach().cpu().clone().requires_grad_(True)
    reference_attention(q_ref, q_ref, q_ref, dense_vaa_mask(layout, weights)).square().sum().backward()
    require(q.grad is not None and bool(torch.isfinite(q.grad).all()), label, f"no finite gradient on {device}")
    assert q.grad is not None and q_ref.grad is not None
    error = (q.grad.cpu() - q_ref.grad).abs().max().item()
    close = torch.allclose(q.grad.cpu(), q_ref.grad, rtol=ATOL, atol=ATOL)
    require(close, label, f"the gradient on {device} differs from the written-out attention's by up to {error:.2e}")
