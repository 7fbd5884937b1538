"""What every authors' side script shares: reading its settings and inputs, writing its outputs.
Runs under the authors' interpreter, so it imports only torch, safetensors and the standard library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def start() -> tuple[Path, Path, dict[str, Any], dict[str, torch.Tensor]]:
    """(checkout, work folder, settings, input tensors) from the command line ``CHECKOUT WORK``."""
    checkout, work = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path.insert(0, str(checkout))
    settings = json.loads((work / "settings.json").read_text())
    inputs = load_file(str(work / "inputs.safetensors"))
    return checkout, work, settings, inputs


def finish(work: Path, outputs: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in outputs.items()}, str(work / "outputs.safetensors"))


class FixedEmbedder(torch.nn.Module):
    """Stands in for a text encoder: returns the embedding picbench computed, so both sides see the same text."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, prompt: Any) -> torch.Tensor:
        return self.value


class DtypeProxy:
    """A stand-in for the ``torch`` module inside one authors' module whose code hard-codes a dtype
    (``torch.bfloat16``): every attribute is torch's, except the replaced dtype."""

    def __init__(self, replace: str, by: torch.dtype) -> None:
        self._replace, self._by = replace, by

    def __getattr__(self, name: str) -> Any:
        return self._by if name == self._replace else getattr(torch, name)
