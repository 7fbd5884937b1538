"""Where weights come from, for every user (methods, the trainer, BMPDS's roles, the metric
models): a local path, else the weights folder laid out as ``DIR/<hub id>/`` (the hub repository's
own layout, as ``picbench weights download`` writes it; ``DIR/<last part of the id>/`` and a role's
``DIR/<role>/`` are read as aliases), else the Hugging Face hub (or its cache). The weights folder
is the one given (``--weights-dir``, a config's ``weights_dir``), else ``$PICBENCH_WEIGHTS_DIR``.
Offline and absent, :func:`missing_weights` is the one error: what is missing, where it was looked
for, and the ``picbench weights download`` command that fetches it. A base module, so that
``reference_impl`` and the metrics can use it without importing an adapter."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from picbench.errors import MissingWeightsError
from picbench.paths import WEIGHTS_ENV

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


def weights_root(given: str | Path | None = None) -> Path | None:
    """The weights folder: ``given`` (``--weights-dir``, a config's ``weights_dir``), else
    ``$PICBENCH_WEIGHTS_DIR``, else None (the hub and its cache only)."""
    if given:
        return Path(given).expanduser()
    env_dir = os.environ.get(WEIGHTS_ENV)
    return Path(env_dir).expanduser() if env_dir else None


def candidates(checkpoint: str, weights_dir: Path | None, role: str | None = None) -> list[Path]:
    """Where a checkpoint is looked for under the weights folder, in order: ``DIR/<hub id>``, then
    the aliases ``DIR/<last part of the id>`` and ``DIR/<role>`` (the layout metric models and
    BMPDS's roles were read from before one layout)."""
    if weights_dir is None:
        return []
    found = [weights_dir / checkpoint, weights_dir / checkpoint.rsplit("/", 1)[-1], *([weights_dir / role] if role else [])]
    return list(dict.fromkeys(found))


def local_checkpoint(checkpoint: str, weights_dir: Path | None, role: str | None = None) -> Path | None:
    """``checkpoint`` itself if it is an existing path, else the first of :func:`candidates` that
    exists; None means "ask the hub"."""
    direct = Path(checkpoint).expanduser()
    if direct.exists():
        return direct
    return next((c for c in candidates(checkpoint, weights_dir, role) if c.exists()), None)


def missing_weights(
    subject: str,
    checkpoint: str,
    cause: BaseException | str | None = None,
    *,
    download: str,
    filename: str | None = None,
    looked: Sequence[Path] = (),
    remedy: str | None = None,
) -> MissingWeightsError:
    """The one missing-weights error: what is missing (``subject`` before its hub id: "method gligen:
    checkpoint", "weights for the clip model"), where it was looked for, the ``picbench weights download`` command that fetches it
    (``download``), and the other ways to provide it (``remedy``). ``cause``: why the hub did not
    serve it (its error, or a sentence)."""
    what = f"{checkpoint}/{filename}" if filename else checkpoint
    paths = [str(p) for p in looked]
    where = f" (not in {', '.join(paths[:-1])} nor {paths[-1]})" if len(paths) > 1 else f" (not in {paths[0]})" if paths else ""
    reason = f" ({cause})" if isinstance(cause, str) else ""
    if isinstance(cause, BaseException):
        reason = f" ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
    download += f"` or `hf download {checkpoint}" + (f" {filename}" if filename else "")
    remedy = remedy or f"put it under --weights-dir DIR as DIR/{checkpoint}, or pass the local path as the 'checkpoint' parameter"
    return MissingWeightsError(
        f"{subject} {what!r}: not found locally{where}, and the hub could not be reached{reason}. "
        f"Download it with `{download}` (with network), or {remedy}."
    )


def _method_missing(
    method: str, checkpoint: str, cause: BaseException | None = None, *, weights_dir: Path | None, **more: Any
) -> MissingWeightsError:
    """:func:`missing_weights` for a method's checkpoint (``method`` may say more after its name)."""
    download = f"picbench weights download {method.split()[0]} --weights-dir DIR"
    looked = candidates(checkpoint, weights_dir)
    return missing_weights(f"method {method}: checkpoint", checkpoint, cause, download=download, looked=looked, **more)


def load_pretrained(method: str, checkpoint: str, weights_dir: Path | None, loader: Callable[[str], T]) -> T:
    """Call ``loader`` on the local copy if there is one, else on the hub id; a hub or cache
    miss becomes a :class:`MissingWeightsError` naming the checkpoint."""
    local = local_checkpoint(checkpoint, weights_dir)
    if local is not None:
        return loader(str(local))
    try:
        return loader(checkpoint)
    except OSError as exc:  # huggingface_hub's offline / not-found errors are OSErrors
        raise _method_missing(method, checkpoint, exc, weights_dir=weights_dir) from exc


def download_file(method: str, checkpoint: str, filename: str, weights_dir: Path | None, *, remedy: str | None = None) -> Path:
    """One file of a hub repository (e.g. a released ``.pth``): local copy first, then the hub."""
    local = local_checkpoint(checkpoint, weights_dir)
    if local is not None:
        path = local / filename if local.is_dir() else local
        if path.is_file():
            return path
        raise _method_missing(method, checkpoint, filename=filename, weights_dir=weights_dir, remedy=remedy)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(checkpoint, filename))
    except OSError as exc:
        raise _method_missing(method, checkpoint, exc, filename=filename, weights_dir=weights_dir, remedy=remedy) from exc
