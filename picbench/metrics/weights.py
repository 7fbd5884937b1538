"""The metric engine's models by role, and where their weights come from: an explicit folder
(``--weights ROLE=DIR``), the weights folder (:mod:`picbench.checkpoints`: ``DIR/<hub id>/``, with
``DIR/<role>/`` read as an alias), the Hugging Face cache, or the hub; offline without them,
:func:`picbench.checkpoints.missing_weights` says which model is missing and how to supply it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from picbench.checkpoints import candidates, local_checkpoint, missing_weights, weights_root
from picbench.errors import MissingWeightsError, PicbenchError
from picbench.paths import WEIGHTS_ENV
from picbench.records import file_sha256
from picbench.registry import Registry


@dataclass(frozen=True)
class MetricModel:
    """A model the metric engine loads by role (encoders, the VLM judge), and its hub id."""

    role: str
    hub_id: str


CLIP = MetricModel("clip", "timm/vit_base_patch32_clip_224.openai")  # open_clip ViT-B-32, OpenAI weights (DreamBooth's protocol)
DINO = MetricModel("dino", "timm/vit_small_patch16_224.dino")  # DINO ViT-S/16 (DreamBooth's protocol)
VLM_JUDGE = MetricModel("vlm_judge", "Qwen/Qwen2.5-VL-7B-Instruct")  # DreamBench++ judges with a VLM; Qwen2.5-VL is the open one

METRIC_MODELS: Registry[MetricModel] = Registry("metric model", entry_point_group="picbench.metric_models")
"""Role -> :class:`MetricModel`; a package can repoint a role (e.g. DINOv2) through its entry point."""
METRIC_MODELS.register("clip", "picbench.metrics.weights:CLIP", CLIP.hub_id)
METRIC_MODELS.register("dino", "picbench.metrics.weights:DINO", DINO.hub_id)
METRIC_MODELS.register("vlm_judge", "picbench.metrics.weights:VLM_JUDGE", VLM_JUDGE.hub_id)


def hub_id(role: str) -> str:
    """The hub id of the metric model registered for ``role``."""
    model = METRIC_MODELS.get(role)
    if not isinstance(model, MetricModel):
        raise PicbenchError(f"metric model {role!r} is registered as a {type(model).__name__}, not a MetricModel")
    return model.hub_id


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class ResolvedWeights:
    role: str
    model_id: str
    folder: Path
    source: str  # "argument", "weights-dir", "hf-cache", "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def missing(role: str, model_id: str, detail: BaseException | str, roots: list[Path], download: str) -> MissingWeightsError:
    """:func:`picbench.checkpoints.missing_weights` for the model of a role, looked for under ``roots``."""
    return missing_weights(
        f"weights for the {role} model",
        model_id,
        detail,
        looked=[c for root in roots for c in candidates(model_id, root, role)],
        download=download,
        remedy=f"pass `--weights {role}=DIR` (a folder holding the checkpoint in its loader's layout), or set {WEIGHTS_ENV}=DIR "
        f"(or --weights-dir DIR) with DIR/{model_id}/ holding it",
    )


def resolve(
    role: str,
    model_id: str,
    weights: Mapping[str, str | Path] | None = None,
    weights_dir: str | Path | None = None,
    *,
    download: str = "picbench weights download --metrics --weights-dir DIR",
) -> ResolvedWeights:
    """The local folder holding ``model_id`` for ``role``: ``weights[role]``, else the weights folder
    ``weights_dir``, then ``$PICBENCH_WEIGHTS_DIR`` (both: a run's --weights-dir adds to the folder
    metric models were read from before it served them), else the Hugging Face cache, else the hub;
    ``download`` is the command the missing-weights error names."""
    if weights and role in weights:
        folder = Path(weights[role]).expanduser()
        if not folder.exists():
            raise MissingWeightsError(
                f"weights for the {role} model {model_id!r}: the folder {folder} given with --weights {role}=DIR does not exist"
            )
        return ResolvedWeights(role, model_id, folder, "argument")
    roots = [r for r in dict.fromkeys((weights_root(weights_dir), weights_root())) if r is not None]
    local = next((found for root in roots if (found := local_checkpoint(model_id, root, role)) is not None), None)
    if local is not None:
        return ResolvedWeights(role, model_id, local, "weights-dir")
    from huggingface_hub import snapshot_download

    try:
        return ResolvedWeights(role, model_id, Path(snapshot_download(model_id, local_files_only=True)), "hf-cache")
    except Exception:  # not cached: any error of the hub client means "not here"
        pass
    if _offline():
        raise missing(role, model_id, "not in the Hugging Face cache and HF_HUB_OFFLINE is set", roots, download)
    try:
        return ResolvedWeights(role, model_id, Path(snapshot_download(model_id)), "hub")
    except Exception as exc:
        raise missing(role, model_id, exc, roots, download) from exc


def weights_sha256(folder: Path) -> str:
    """sha256 of the checkpoint file(s) in a folder (or of the file itself), for provenance and
    cache keys: different weights never share cached embeddings."""
    folder = Path(folder)
    files = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise MissingWeightsError(f"no checkpoint file ({', '.join(_WEIGHT_SUFFIXES)}) in {folder}")
    if len(files) == 1:
        return file_sha256(files[0])
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()
