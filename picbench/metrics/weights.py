"""Where model weights come from: an explicit folder, ``$PICBENCH_WEIGHTS_DIR/<role>/``, the
Hugging Face cache, or the hub; offline without them, a :class:`MissingWeightsError` that says
which model is missing and how to supply it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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

MODELS: Registry[MetricModel] = Registry("metric model", entry_point_group="picbench.metric_models")
"""Role -> :class:`MetricModel`; a package can repoint a role (e.g. DINOv2) through its entry point."""
MODELS.register("clip", "picbench.metrics.weights:CLIP", CLIP.hub_id)
MODELS.register("dino", "picbench.metrics.weights:DINO", DINO.hub_id)
MODELS.register("vlm_judge", "picbench.metrics.weights:VLM_JUDGE", VLM_JUDGE.hub_id)


def hub_id(role: str) -> str:
    """The hub id of the metric model registered for ``role``."""
    model = MODELS.get(role)
    if not isinstance(model, MetricModel):
        raise PicbenchError(f"metric model {role!r} is registered as a {type(model).__name__}, not a MetricModel")
    return model.hub_id


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class ResolvedWeights:
    role: str
    model_id: str
    folder: Path
    source: str  # "argument", "env", "hf-cache", "hub", "tiny"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def missing(role: str, model_id: str, detail: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"weights for the {role} model {model_id!r} are not available ({detail}). Supply them with "
        f"`--weights {role}=DIR` (a folder holding the checkpoint in its loader's layout), or set "
        f"{WEIGHTS_ENV} so that ${WEIGHTS_ENV}/{role}/ holds them, or download {model_id!r} into the "
        f"Hugging Face cache (`hf download {model_id}`) on a machine with hub access; `picbench weights download --metrics "
        f"--weights-dir DIR` fetches every default metric model as DIR/<role>/ for {WEIGHTS_ENV}=DIR."
    )


def resolve(role: str, model_id: str, weights: Mapping[str, str | Path] | None = None) -> ResolvedWeights:
    """The local folder holding ``model_id`` for ``role``, looked up in the documented order."""
    if weights and role in weights:
        folder = Path(weights[role]).expanduser()
        if not folder.exists():
            raise missing(role, model_id, f"the folder {folder} given with --weights does not exist")
        return ResolvedWeights(role, model_id, folder, "argument")
    env_dir = os.environ.get(WEIGHTS_ENV)
    if env_dir and (Path(env_dir) / role).is_dir():
        return ResolvedWeights(role, model_id, Path(env_dir) / role, "env")
    from huggingface_hub import snapshot_download

    try:
        return ResolvedWeights(role, model_id, Path(snapshot_download(model_id, local_files_only=True)), "hf-cache")
    except Exception:  # not cached: any error of the hub client means "not here"
        pass
    if _offline():
        raise missing(role, model_id, "not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    try:
        return ResolvedWeights(role, model_id, Path(snapshot_download(model_id)), "hub")
    except Exception as exc:
        raise missing(role, model_id, f"the hub could not be reached: {type(exc).__name__}") from exc


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
