"""``uno`` against UNO's own ``UNOPipeline`` (bytedance/UNO @ d305981), stage by stage.

Both sides load the same tiny random weights, made by UNO's code and saved as released
(``flux1-dev.safetensors``, ``ae.safetensors``, ``dit_lora.safetensors`` as ``train.py`` saves it);
picbench reads them through ``--weights-dir`` (diffusers' conversion of the released files), UNO
through ``UNOPipeline(only_lora=True)``. Both get the same text embeddings (picbench's), the same
reference files (UNO sized by ``inference.py``'s rule, picbench by its own), the same seed and the
same posterior draw for the references. fp32: every latent-space stage within 1e-4 of the largest
final latent, times and ids to round-off, the 8-bit image within one grey level. bf16 (UNO's GPU
dtype, here on the CPU): every stage bit for bit, from the reference encoding (picbench's VAE
computes as BFL's ``AutoEncoder``: ``reference_impl/bfl_vae.py``) through the transformer and
sampler to the 8-bit image.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flux_side import compare_with_uno, mode_name, uno_sample
from parity_harness import assert_parity


def _check(uno_files: Path, tmp_path: Path, data_dir: Path, n_refs: int, dtype: torch.dtype, lora_dtype: torch.dtype) -> None:
    from picbench.adapters.uno import UnoMethod

    diffs, _ = compare_with_uno(UnoMethod, {}, uno_sample(n_refs), uno_files, tmp_path, data_dir, dtype, lora_dtype)
    assert_parity("uno", mode_name(dtype, lora_dtype, n_refs), diffs)


@pytest.mark.parametrize("n_refs", [1, 3])
def test_uno_matches_the_authors_in_fp32(uno_files: Path, tmp_path: Path, data_dir: Path, n_refs: int) -> None:
    _check(uno_files, tmp_path, data_dir, n_refs, torch.float32, torch.float32)


@pytest.mark.parametrize(
    ("n_refs", "lora_dtype"),
    [
        pytest.param(1, torch.float32, id="1ref-lora_fp32"),
        pytest.param(3, torch.float32, id="3refs-lora_fp32"),
        pytest.param(1, torch.bfloat16, id="1ref-lora_bf16"),
    ],
)
def test_uno_is_bit_exact_in_bf16(uno_files: Path, tmp_path: Path, data_dir: Path, n_refs: int, lora_dtype: torch.dtype) -> None:
    _check(uno_files, tmp_path, data_dir, n_refs, torch.bfloat16, lora_dtype)
