"""Training checkpoints: atomic, complete (LoRA, optimizer, EMA, RNG, data position, stage), resumable.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` written first as a hidden temporary folder and
renamed into place once every file is on disk; `checkpoints/latest` (written atomically) names the
newest. A run killed at any moment (SIGKILL included) leaves the previous checkpoint intact and
resumes from it. What is saved:
- `pytorch_lora_weights.safetensors`: the LoRA in diffusers/peft names (what `picbench run
  --method positionic --param lora=FILE` loads), and `uno_dit_lora.safetensors`, the same LoRA in
  UNO's released layout; `ema_*.safetensors` likewise when EMA is on;
- `optimizer.pt` (AdamW state; under FSDP or DeepSpeed the engine's own sharded state in `engine/`,
  written by `accelerator.save_state`, which every rank calls);
- `rng-<rank>.pt`: python, numpy and torch RNG states per rank;
- `state.json`: stage, step in stage, global step, skipped pairs, config hash.
The learning rate is a pure function of (stage, step), and every random draw of a micro-batch
comes from a generator seeded by (seed, stage, micro-batch index), so this is all a resume needs
to continue bit for bit.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from picbench.atomic import atomic_write
from picbench.errors import PicbenchError

LORA_FILE = "pytorch_lora_weights.safetensors"
UNO_LAYOUT_FILE = "uno_dit_lora.safetensors"
STATE_FILE = "state.json"
LATEST = "latest"


@dataclass
class TrainState:
    """Where training stands: the data position is (stage, step) itself."""

    stage: int = 0
    step: int = 0
    global_step: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    """Pair id -> why it was skipped (corrupt image met mid-run)."""
    config_hash: str = ""


def checkpoint_dir(out: Path, global_step: int) -> Path:
    return out / "checkpoints" / f"step-{global_step:07d}"


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    folder = out / "checkpoints" / pointer.read_text().strip()
    if not (folder / STATE_FILE).is_file():
        raise PicbenchError(f"{pointer} names {folder}, which is not a complete checkpoint")
    return folder


def save_rng(folder: Path, rank: int) -> None:
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}, folder / f"rng-{rank}.pt")


def load_rng(folder: Path, rank: int) -> None:
    file = folder / f"rng-{rank}.pt"
    if not file.is_file():
        return  # resumed on more ranks than saved: per-micro-batch generators carry the randomness anyway
    states = torch.load(file, weights_only=False)
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def write_checkpoint(
    tmp: Path,
    *,
    lora: dict[str, torch.Tensor],
    uno: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor] | None,
    optimizer: dict[str, Any] | None,
    state: TrainState,
) -> None:
    """The main process's files, into the temporary folder (RNG and engine state are per rank)."""
    save_file(lora, str(tmp / LORA_FILE))
    save_file(uno, str(tmp / UNO_LAYOUT_FILE))
    if ema is not None:
        save_file(ema, str(tmp / f"ema_{LORA_FILE}"))
    if optimizer is not None:
        torch.save(optimizer, tmp / "optimizer.pt")
    (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2, sort_keys=True))


def publish(tmp: Path, final: Path, keep: int) -> None:
    """Rename the finished temporary folder into place, point `latest` at it, drop old ones."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    with atomic_write(final.parent / LATEST) as f:
        f.write(final.name)
    done = sorted(p for p in final.parent.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in final.parent.glob(".step-*.tmp"):
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)


def read_state(folder: Path) -> TrainState:
    return TrainState(**json.loads((folder / STATE_FILE).read_text()))


def read_lora(folder: Path, ema: bool = False) -> dict[str, torch.Tensor]:
    return load_file(str(folder / (f"ema_{LORA_FILE}" if ema else LORA_FILE)))
