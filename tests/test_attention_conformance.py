"""The attention-backend suite (:mod:`picbench.testing.attention`) over every registered backend,
and a broken backend failing it with a message naming the backend. A backend that compiles per
shape (``flex``: 7-30 s per compile on CPU, no backward there) runs one case, masked only; its
unmasked path and other layouts are pinned in tests/test_reference_attention.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from picbench.reference_impl.attention import ATTENTION_BACKENDS, SdpaAttention
from picbench.testing import check_attention_backend
from picbench.testing.attention import CASES


def _cases() -> list[Any]:
    params = []
    for name in ATTENTION_BACKENDS.names():
        if ATTENTION_BACKENDS.get(name).compiles_per_shape:
            params.append(pytest.param(name, [next(iter(CASES))], False, id=name, marks=pytest.mark.slow))
        else:
            params.append(pytest.param(name, None, True, id=name))
    return params


@pytest.mark.parametrize(("name", "cases", "unmasked"), _cases())
def test_every_registered_backend_computes_the_dense_vaa_attention(name: str, cases: list[str] | None, unmasked: bool) -> None:
    check_attention_backend(name, "cpu", cases, unmasked=unmasked)


def test_every_registered_backend_declares_where_it_trains() -> None:
    declared = {name: ATTENTION_BACKENDS.get(name).backward_devices for name in ATTENTION_BACKENDS.names()}
    assert {"sdpa", "sdpa_lowrank", "flex"} <= set(declared)
    assert declared["sdpa"] == declared["sdpa_lowrank"] == {"cpu", "cuda"} and declared["flex"] == {"cuda"}


class DropsTheLogWeights(SdpaAttention):
    """Keeps the -inf entries but not the log visibility weights: a plausible, wrong optimisation."""

    name = "drops_log_weights"

    def prepare(self, layout: Any, weights: torch.Tensor | None, *, device: Any, dtype: torch.dtype) -> torch.Tensor | None:
        mask = super().prepare(layout, weights, device=device, dtype=dtype)
        return None if mask is None else torch.where(torch.isinf(mask), mask, torch.zeros_like(mask))


class NoGradient(SdpaAttention):
    """Exact forward, but detached: it claims a backward it does not have."""

    name = "no_gradient"

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prepared: Any) -> torch.Tensor:
        out = super().__call__(q.detach(), k.detach(), v.detach(), prepared)
        return out + 0 * q if q.requires_grad else out


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        (DropsTheLogWeights, "case two-refs-overlap: differs from dense_vaa_mask attention by"),
        (NoGradient, "the gradient on cpu differs from the written-out attention's"),
    ],
    ids=["drops_log_weights", "no_gradient"],
)
def test_a_broken_backend_fails_the_suite_naming_it(backend: type, message: str) -> None:
    with pytest.raises(AssertionError) as failed:
        check_attention_backend(backend)
    assert str(failed.value).startswith(f"attention backend {backend.name!r} (test_attention_conformance:{backend.__qualname__}): ")
    assert message in str(failed.value)
