"""FLUX's resolution-shifted flow-matching time schedule, with the two token counts UNO feeds it.

The shift (BFL's `flux/sampling.py`, kept by UNO in `uno/flux/sampling.py` @ d305981) maps a time
t in [0, 1] to `exp(mu) / (exp(mu) + (1/t - 1))`, with `mu` linear in an image "sequence length":
0.5 at 256 and 1.15 at 4096 (`get_lin_function`). UNO computes that length two different ways:

- **sampling** (`uno/flux/pipeline.py`, `UNOPipeline.forward`):
  `get_schedule(steps, (width // 8) * (height // 8) // (16 * 16))`, i.e. the latent area divided
  by 256: 16 at 512x512, so mu ~0.459 (diffusers' `calculate_shift` on the packed token count,
  1024 at 512x512, gives mu ~0.630);
- **training** (`train.py`): `get_schedule(999, (resolution // 8) ** 2 // 4)`, the packed token
  count (mu ~0.630 at 512), timesteps drawn uniformly from those 1000 shifted values.

`uno` samples with UNO's sampling rule. `positionic` does too: PositionIC is trained from UNO and
inherits its sampler, so its untrained baseline ("VAA on UNO") is UNO's own schedule plus VAA;
`schedule="flux"` selects diffusers' rule instead (a slightly later, noisier-biased schedule:
mu 0.63 instead of 0.46 at 512 px). The trainer computes mu per resolution bucket from the
bucket's packed token count, as UNO's training rule does for its single resolution.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

BASE_SEQ_LEN, MAX_SEQ_LEN = 256, 4096
BASE_SHIFT, MAX_SHIFT = 0.5, 1.15

Schedule = Literal["uno", "flux"]


def lin_mu(seq_len: float, base_shift: float = BASE_SHIFT, max_shift: float = MAX_SHIFT) -> float:
    """`get_lin_function(256, base_shift, 4096, max_shift)(seq_len)` of UNO's `uno/flux/sampling.py:183-188`
    (bytedance/UNO @ d305981), with its association (`m * x + b`, `b = y1 - m * x1`), so mu agrees to the bit."""
    slope = (max_shift - base_shift) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    intercept = base_shift - slope * BASE_SEQ_LEN
    return slope * seq_len + intercept


def sampling_mu(width: int, height: int, schedule: Schedule = "uno") -> float:
    """mu for sampling an image of `width` x `height` pixels (multiples of 16)."""
    if schedule == "uno":
        return lin_mu((width // 8) * (height // 8) // (16 * 16))
    if schedule == "flux":
        return lin_mu((width // 16) * (height // 16))
    raise ValueError(f"unknown schedule {schedule!r}: choose 'uno' or 'flux'")


def sampling_times(steps: int, mu: float) -> list[float]:
    """The `steps + 1` times from 1 to 0 that UNO's sampler walks (`get_schedule`, `uno/flux/sampling.py:191-207`
    @ d305981): `torch.linspace(1, 0, steps + 1)` in float32, shifted, as Python floats."""
    return time_shift(mu, torch.linspace(1, 0, steps + 1)).tolist()


def time_shift(mu: float, t: torch.Tensor) -> torch.Tensor:
    """BFL's `time_shift(mu, 1.0, t)` (diffusers' `_time_shift_exponential`): 0 stays 0, 1 stays 1."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def training_times(n_tokens: int, count: int, generator: torch.Generator, *, logit_normal: bool = False) -> torch.Tensor:
    """`count` training times in (0, 1] for targets of `n_tokens` packed tokens (UNO's `train.py`:
    a uniform index into `get_schedule(999, n_tokens)`; optionally SD3's logit-normal(0, 1), then shifted)."""
    mu = lin_mu(n_tokens)
    if logit_normal:
        t = torch.sigmoid(torch.randn(count, generator=generator, dtype=torch.float64))
        return time_shift(mu, t.clamp(1e-6, 1.0)).float()
    grid = time_shift(mu, torch.linspace(1, 0, 1000, dtype=torch.float64))  # ends at exactly 0, as UNO's
    return grid[torch.randint(0, 1000, (count,), generator=generator)].float()
