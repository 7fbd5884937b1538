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
- `rng-<rank>.json`: python, numpy and torch RNG states per rank, as plain numbers;
- `state.json`: stage, step in stage, global step, skipped pairs, the config's hash (and one per
  table, to say what changed) and the pair set's hash.
The learning rate is a pure function of (stage, step), and every random draw of a micro-batch
comes from a generator seeded by (seed, stage, micro-batch index), so this is all a resume needs
to continue bit for bit.

A checkpoint may come from someone else, so nothing in it can run code: tensors are read with
`torch.load(weights_only=True)` (tensors and plain containers only, never arbitrary pickles) or
safetensors, everything else is JSON. Every reader names the file (and field) it could not use.
Files are written with the permissions the umask gives (`picbench.atomic`).
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from picbench.atomic import atomic_write
from picbench.errors import PicbenchError

LORA_FILE = "pytorch_lora_weights.safetensors"
UNO_LAYOUT_FILE = "uno_dit_lora.safetensors"
STATE_FILE = "state.json"
LATEST = "latest"
OPTIMIZER_FILE = "optimizer.pt"


class CheckpointError(PicbenchError):
    """A checkpoint file that cannot be used (damaged, truncated, or not what picbench writes)."""


@dataclass
class TrainState:
    """Where training stands: the data position is (stage, step) itself."""

    stage: int = 0
    step: int = 0
    global_step: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    """Pair id -> why it was skipped (corrupt image met mid-run)."""
    config_hash: str = ""
    config_tables: dict[str, str] = field(default_factory=dict)
    """Config table -> its hash, so a refused resume can say which table changed."""
    pairs_hash: str = ""
    """sha256 (16 hex) of the pair set's pairs.jsonl."""


def checkpoint_dir(out: Path, global_step: int) -> Path:
    return out / "checkpoints" / f"step-{global_step:07d}"


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{pointer} cannot be read: {exc}") from None
    if not re.fullmatch(r"step-\d{7}", name):
        raise CheckpointError(f"{pointer} must name a checkpoint folder step-NNNNNNN, it holds {name[:80]!r}")
    folder = out / "checkpoints" / name
    if not (folder / STATE_FILE).is_file():
        raise PicbenchError(f"{pointer} names {folder}, which is not a complete checkpoint")
    return folder


def _rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng-{rank}.json"


def save_rng(folder: Path, rank: int) -> None:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }
    with atomic_write(_rng_file(folder, rank)) as f:
        json.dump(states, f)


def load_rng(folder: Path, rank: int) -> None:
    file = _rng_file(folder, rank)
    if not file.is_file():
        return  # resumed on more ranks than saved: per-micro-batch generators carry the randomness anyway
    states = read_json(file)
    try:
        version, internal, gauss = states["python"]
        kind, keys, pos, has_gauss, cached = states["numpy"]
        random.setstate((version, tuple(internal), gauss))
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{file}: not the RNG states picbench writes ({type(exc).__name__}: {exc})") from None


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
    tensors = {LORA_FILE: lora, UNO_LAYOUT_FILE: uno} | ({f"ema_{LORA_FILE}": ema} if ema is not None else {})
    for name, weights in tensors.items():
        with atomic_write(tmp / name, "wb") as f:
            f.write(safetensors_bytes(weights))
    if optimizer is not None:
        with atomic_write(tmp / OPTIMIZER_FILE, "wb") as f:
            torch.save(optimizer, f)
    with atomic_write(tmp / STATE_FILE) as f:
        f.write(json.dumps(asdict(state), indent=2, sort_keys=True))


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


def read_json(file: Path) -> Any:
    """A JSON file of a checkpoint, or :class:`CheckpointError` naming it."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{file} is damaged: {exc}") from None


def read_state(folder: Path) -> TrainState:
    file = folder / STATE_FILE
    raw = read_json(file)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: must hold a JSON object, got {type(raw).__name__}")
    known = {f.name: f for f in fields(TrainState)}
    if unknown := sorted(set(raw) - set(known)):
        raise CheckpointError(f"{file}: unknown field(s) {unknown}")
    default = TrainState()
    for name, value in raw.items():
        expected = type(getattr(default, name))
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise CheckpointError(f"{file}: field {name!r} must be {expected.__name__}, got {value!r}")
        if expected is int and value < 0:
            raise CheckpointError(f"{file}: field {name!r} must be >= 0, got {value}")
        if expected is dict and not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise CheckpointError(f"{file}: field {name!r} must map names to strings")
    return TrainState(**raw)


def read_lora(folder: Path, ema: bool = False) -> dict[str, torch.Tensor]:
    file = folder / (f"ema_{LORA_FILE}" if ema else LORA_FILE)
    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file} is damaged or truncated: {exc}") from None


def read_optimizer(folder: Path) -> dict[str, Any]:
    """The optimizer state, loaded with ``weights_only=True``: a file holding anything but tensors
    and plain containers (a pickle that would run code) is refused, never executed."""
    file = folder / OPTIMIZER_FILE
    try:
        state = torch.load(file, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing") from None
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{file} holds more than tensors and plain data, so it was not loaded (nothing in it ran): {first}") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{file} is damaged or truncated: {exc}") from None
    if not isinstance(state, dict) or not {"state", "param_groups"} <= set(state):
        raise CheckpointError(f"{file}: not an optimizer state (no 'state' and 'param_groups')")
    return state
