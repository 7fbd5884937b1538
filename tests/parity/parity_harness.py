"""The parity suite's plumbing: where the authors' checkouts are, which interpreter runs each,
how the two sides exchange tensors, and how their stages are compared.

The suite is opt-in: ``PICBENCH_PARITY_DIR`` names a folder with one subfolder per repository at
its pinned commit (``UNO/``, ``DreamO/``, ``MS-Diffusion/``, ``InstanceDiffusion/``, ``GLIGEN/``;
docs/parity.md says how to make it). Without it every parity test skips, saying so (CI has no
GitHub). The authors' side always runs in a subprocess (their packages have clashing top-level
names, ``ldm`` twice, and may need older libraries): by default with this interpreter, or with
``PICBENCH_PARITY_PYTHON_<REPO>`` (e.g. ``PICBENCH_PARITY_PYTHON_DREAMO=/venv/bin/python``).
Tensors go both ways as safetensors files, settings as JSON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from picbench.records import Sample, Subject

PARITY_DIR_ENV = "PICBENCH_PARITY_DIR"
SIDES = Path(__file__).resolve().parent / "authors"
"""The scripts that run inside the authors' checkouts (one per repository)."""

PINNED = {
    "UNO": "d305981b9e301315b5c110aef9c7eed827457858",
    "DreamO": "461e35ba6b068f42ca53b43f289b3d91b7f911cd",
    "MS-Diffusion": "74eb2d6d96669a8be9e786410de445ea41c187c0",
    "InstanceDiffusion": "722900ef03e3579fb693e65a1550333a4a162581",
    "GLIGEN": "f9dccb9c6cf48bad03c3666290a7dec8c5e58f3c",
}
"""The commits the suite was written against (the ones the adapters cite)."""

COMMIT_MARKER = ".picbench-commit"
"""A file holding the commit of an exported (``git archive``) checkout, which has no ``.git``."""


def checkout(repo: str) -> Path:
    """The authors' checkout of ``repo``, at its pinned commit; skips when the suite is not enabled."""
    root = os.environ.get(PARITY_DIR_ENV)
    if not root:
        pytest.skip(f"parity suite off: set {PARITY_DIR_ENV} to a folder of the authors' checkouts (docs/parity.md)")
    folder = Path(root).expanduser() / repo
    if not folder.is_dir():
        pytest.fail(f"{PARITY_DIR_ENV}={root} has no {repo}/ folder (the checkout of {repo} at {PINNED[repo]})")
    found = checkout_commit(folder)
    if found is not None and not PINNED[repo].startswith(found) and not found.startswith(PINNED[repo]):
        pytest.fail(f"{folder} is at commit {found}, the suite is pinned to {PINNED[repo]}")
    return folder


def checkout_commit(folder: Path) -> str | None:
    """The commit of a checkout: ``git rev-parse HEAD`` in a clone, the marker file of an export, else None (unverified)."""
    if (folder / ".git").exists():
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
        return done.stdout.strip() or None
    marker = folder / COMMIT_MARKER
    return marker.read_text().strip() if marker.is_file() else None


def python_for(repo: str) -> str:
    """The interpreter that runs the authors' side of ``repo``: ``PICBENCH_PARITY_PYTHON_<REPO>`` or this one."""
    return os.environ.get(f"PICBENCH_PARITY_PYTHON_{re.sub(r'[^A-Z0-9]', '_', repo.upper())}", sys.executable)


def run_side(
    repo: str, script: str, work: Path, settings: Mapping[str, Any], tensors: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Run ``authors/<script>`` inside the checkout of ``repo``: it reads ``work/settings.json`` and
    ``work/inputs.safetensors`` and writes ``work/outputs.safetensors``, which is returned."""
    folder = checkout(repo)
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps(dict(settings), indent=1))
    save_file({k: v.contiguous() for k, v in (tensors or {}).items()}, str(work / "inputs.safetensors"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(SIDES)]), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [python_for(repo), str(SIDES / script), str(folder), str(work)], cwd=folder, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"the authors' side ({script} with {python_for(repo)}) failed:\n{done.stderr[-6000:]}")
    return load_file(str(work / "outputs.safetensors"))


@dataclass(frozen=True)
class StageDiff:
    """One stage of a comparison: the largest absolute difference and what it is measured against."""

    stage: str
    max_abs: float
    scale: float
    tolerance: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tolerance


def compare_stages(
    ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor], stages: Sequence[str], tolerance: Mapping[str, float]
) -> list[StageDiff]:
    """Every stage, in pipeline order; a stage absent on one side, or of another shape, is an infinite difference."""
    diffs = []
    for stage in stages:
        a, b = ours.get(stage), theirs.get(stage)
        if a is None or b is None:
            diffs.append(
                StageDiff(
                    stage,
                    float("inf"),
                    0.0,
                    tolerance[stage],
                    f"recorded by {'neither side' if a is None and b is None else 'one side only'}",
                )
            )
            continue
        if a.shape != b.shape:
            diffs.append(
                StageDiff(stage, float("inf"), 0.0, tolerance[stage], f"shapes differ: ours {tuple(a.shape)}, authors' {tuple(b.shape)}")
            )
            continue
        a, b = a.double(), b.double()
        diffs.append(
            StageDiff(stage, float((a - b).abs().max()) if a.numel() else 0.0, float(b.abs().max()) if b.numel() else 0.0, tolerance[stage])
        )
    return diffs


def report(method: str, mode: str, diffs: Sequence[StageDiff], shapes: Mapping[str, torch.Tensor] | None = None) -> str:
    """A table of the figures (printed, so ``pytest -s`` shows them for docs/parity.md)."""
    lines = [f"parity {method} [{mode}]: stage, max |ours - authors'|, max |authors'|, tolerance"]
    lines += [
        f"  {d.stage:<28} {d.max_abs:<12.4g} {d.scale:<12.4g} {d.tolerance:<10.3g} {'ok' if d.ok else 'DIVERGES'} {d.note}".rstrip()
        for d in diffs
    ]
    text = "\n".join(lines)
    print(text)
    return text


class ParityMismatch(AssertionError):
    """The two sides disagree at some stage (as opposed to a side failing to run)."""


def assert_parity(method: str, mode: str, diffs: Sequence[StageDiff]) -> None:
    """Fails naming the first stage (in pipeline order) whose difference is over its tolerance."""
    text = report(method, mode, diffs)
    first = next((d for d in diffs if not d.ok), None)
    if first is not None:
        raise ParityMismatch(
            f"{method} [{mode}]: first diverging stage is {first.stage!r} (max abs diff {first.max_abs:.4g} > {first.tolerance:.3g}"
            f"{'; ' + first.note if first.note else ''})\n{text}"
        )


def dog_and_cat(sample_id: str, size: int) -> Sample:
    """The two-subject sample the box-grounded SD parity modules (gligen, instancediffusion) share:
    DreamBench's dog and cat in side-by-side boxes of a square image."""
    subjects = (
        Subject("dog", "dog", ("dreambench/dataset/dog/00.jpg",), box=(0.05, 0.3, 0.5, 0.9)),
        Subject("cat", "cat", ("dreambench/dataset/cat/00.jpg",), box=(0.5, 0.15, 0.95, 0.75)),
    )
    return Sample(sample_id, "a dog and a cat in a garden", size, size, "multi", subjects)
