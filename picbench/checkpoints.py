"""Where a method's released weights come from: a local folder or file, else the Hugging Face
hub (or its cache). Offline and absent, the error names the checkpoint and how to provide it.
Shared by the adapters, the positionic method and the trainer (a base module, so that
``reference_impl`` can use it without importing an adapter)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from picbench.errors import MissingWeightsError

T = TypeVar("T")

DIFFUSERS_FILES = ("model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors")
"""A diffusers pipeline folder: its index and each component's configs, tokenizer files and
safetensors weights; not the single-file checkpoints some repositories also keep at the top."""
TRANSFORMERS_FILES = ("*.json", "*.txt", "*.model", "*.safetensors")
"""A transformers model folder: configs, tokenizer files and safetensors weights (not the
``pytorch_model.bin`` or open_clip copies some repositories also keep)."""
DIFFUSERS_SKIPPED = ("*.fp16.*", "*non_ema*", "*.ema.*", "safety_checker/*")
"""Variants and parts no picbench loader reads (half-precision and EMA copies, the safety checker)."""


@dataclass(frozen=True)
class HubFiles:
    """What a loader reads from one hub repository: the files matching ``files`` (glob patterns,
    as huggingface_hub's ``allow_patterns``; None: every file) but not ``skip``. ``folder`` is
    where it goes under a weights folder: the hub id (the --weights-dir layout of method
    checkpoints) unless another is given (a metric model's role)."""

    repo: str
    files: tuple[str, ...] | None = None
    skip: tuple[str, ...] = ()
    folder: str | None = None

    @property
    def target(self) -> str:
        return self.folder or self.repo


def diffusers_folder(repo: str) -> HubFiles:
    """A diffusers pipeline repository, as ``from_pretrained`` reads it."""
    return HubFiles(repo, DIFFUSERS_FILES, DIFFUSERS_SKIPPED)


def hub_files(checkpoint: str, filename: str | None = None) -> HubFiles | None:
    """The download of a checkpoint given as a method parameter: None where it is a local path
    (nothing to fetch); a repository and one of its files where ``filename`` is named."""
    if Path(checkpoint).expanduser().exists() or checkpoint.count("/") != 1:
        return None
    return HubFiles(checkpoint, (filename,)) if filename else diffusers_folder(checkpoint)


def local_checkpoint(checkpoint: str, weights_dir: Path | None) -> Path | None:
    """``checkpoint`` itself if it is an existing path, else ``weights_dir/<hub id>`` or
    ``weights_dir/<last part of the id>`` if present; None means "ask the hub"."""
    direct = Path(checkpoint).expanduser()
    if direct.exists():
        return direct
    if weights_dir is not None:
        for candidate in (weights_dir / checkpoint, weights_dir / checkpoint.rsplit("/", 1)[-1]):
            if candidate.exists():
                return candidate
    return None


def missing_weights(
    method: str,
    checkpoint: str,
    cause: BaseException | None = None,
    *,
    filename: str | None = None,
    weights_dir: Path | None = None,
    remedy: str | None = None,
) -> MissingWeightsError:
    """The offline error: what is missing, where it was looked for, and how to provide it
    (``remedy``: the ways other than downloading, where they are not --weights-dir and the
    'checkpoint' parameter)."""
    what = f"{checkpoint}/{filename}" if filename else checkpoint
    looked = f" (not in {weights_dir / checkpoint} nor {weights_dir / checkpoint.rsplit('/', 1)[-1]})" if weights_dir is not None else ""
    download = f"picbench weights download {method} --weights-dir DIR` or `hf download {checkpoint}" + (f" {filename}" if filename else "")
    remedy = remedy or f"put it under --weights-dir DIR as DIR/{checkpoint}, or pass the local path as the 'checkpoint' parameter"
    return MissingWeightsError(
        f"method {method}: checkpoint {what!r} is not available locally{looked} and the hub could not be reached"
        + (f" ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})" if cause else "")
        + f". Download it with `{download}` (with network), or {remedy}."
    )


def load_pretrained(method: str, checkpoint: str, weights_dir: Path | None, loader: Callable[[str], T]) -> T:
    """Call ``loader`` on the local copy if there is one, else on the hub id; a hub or cache
    miss becomes a :class:`MissingWeightsError` naming the checkpoint."""
    local = local_checkpoint(checkpoint, weights_dir)
    if local is not None:
        return loader(str(local))
    try:
        return loader(checkpoint)
    except OSError as exc:  # huggingface_hub's offline / not-found errors are OSErrors
        raise missing_weights(method, checkpoint, exc, weights_dir=weights_dir) from exc


def download_file(method: str, checkpoint: str, filename: str, weights_dir: Path | None, *, remedy: str | None = None) -> Path:
    """One file of a hub repository (e.g. a released ``.pth``): local copy first, then the hub."""
    local = local_checkpoint(checkpoint, weights_dir)
    if local is not None:
        path = local / filename if local.is_dir() else local
        if path.is_file():
            return path
        raise missing_weights(method, checkpoint, filename=filename, weights_dir=weights_dir, remedy=remedy)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(checkpoint, filename))
    except OSError as exc:
        raise missing_weights(method, checkpoint, exc, filename=filename, weights_dir=weights_dir, remedy=remedy) from exc
