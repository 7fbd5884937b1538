"""What every authors' side script shares: reading its settings and inputs, writing its outputs.
Runs under the authors' interpreter, so it imports only torch, safetensors and the standard library."""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
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


class FixedTextEncoder:
    """Stands in for an LDM ``FrozenCLIPEmbedder``: ``encode`` answers with picbench's embedding of each prompt."""

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        self.table = table

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return torch.cat([self.table[p] for p in prompts])


def patched(obj: Any, replacements: dict[str, tuple[str, int]]) -> Any:
    """``obj`` (a class or function of the authors) recompiled from its own source with each
    ``old`` -> ``(new, count)`` made, ``old`` occurring exactly ``count`` times, in its module's
    namespace: one hard-coded value or call replaced, the rest of the authors' code as written."""
    source = textwrap.dedent(inspect.getsource(obj))
    for old, (new, count) in replacements.items():
        if source.count(old) != count:
            raise RuntimeError(f"patch for {obj.__qualname__}: {old!r} occurs {source.count(old)} times, not {count}")
        source = source.replace(old, new)
    namespace: dict[str, Any] = {}
    exec(compile(source, inspect.getsourcefile(obj), "exec"), vars(sys.modules[obj.__module__]), namespace)
    return namespace[obj.__name__]
