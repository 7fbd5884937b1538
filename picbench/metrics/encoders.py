"""CLIP and DINO image/text encoders behind one small interface, each with its original
preprocessing, returning L2-normalized float32 embeddings.

Precision: fp32 on every device by default, as DreamBooth's and DreamBench++'s protocols compute;
``precision="bf16"`` runs the forward passes under bf16 autocast (CUDA or CPU), an opt-in that the
run's protocol records. The cache key (:attr:`Encoder.model_id`) holds the precision, the device
type and the activation, so embeddings of one arithmetic are never served to another.
OpenAI's CLIP weights were trained with QuickGELU: every loading path forces it for them and
:func:`clip_activation` checks the loaded model's own activation modules, whatever its config says.

CLIP comes through open_clip (default ViT-B-32, OpenAI weights) or a transformers CLIPModel;
DINO through timm (``vit_small_patch16_224.dino``; DINOv2 by name). Every encoder records its
model id, weight hash and preprocessing, and counts its own seconds in forward passes (summed
over the threads that call it; the engine measures its wall time itself).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from picbench.errors import MissingWeightsError, PicbenchError
from picbench.metrics.weights import weights_sha256

log = logging.getLogger(__name__)
CONTEXT_LENGTH = 77
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRECISIONS = ("fp32", "bf16")
OPENAI_MARK = "openai"
MIN_BATCH = 2
"""On CPU a batch of one takes another matrix-multiply kernel than larger batches (a last-bit
difference, ~6e-8), so an image's embedding would depend on how many others shared its batch (a
sharded run would not equal a single one). Batches of one are padded to two; from two on, every
row comes out the same whatever the batch (tests/test_metrics_encoders.py)."""
CPU_FORWARD_CHUNK = 8
"""On CPU a batch is run through the model 8 images at a time: a ViT's activations for 8 images
stay in cache where 32 do not, and the element-wise layers (GELU, QuickGELU, the attention copies)
slow down on memory (measured: docs/benchmarks.md, "Figures behind defaults"). Rows do not
depend on their batch (see :data:`MIN_BATCH`), so the numbers are the same. On CUDA the whole
batch goes at once."""


class Encoder:
    """An image encoder: ``preprocess`` (PIL -> tensor, safe to call from decoding threads) and
    ``encode_images`` (batch -> normalized embeddings)."""

    role: str = ""
    preprocess: Callable[[Image.Image], torch.Tensor]

    activation: str | None = None  # CLIP: "quick_gelu" or "gelu", read from the loaded model
    openai_weights: bool = False

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        arch: str,
        folder: Path,
        device: str,
        preprocessing: dict[str, Any],
        checkpoint: Path | None = None,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise PicbenchError(f"encoder precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.arch = arch
        self.folder = Path(folder)
        self.weights_sha256 = weights_sha256(checkpoint or folder)
        self.preprocessing = preprocessing
        self.precision = precision
        self.forward_seconds = 0.0  # summed over the threads that encode at once (engine's forward workers)
        self._timing = threading.Lock()

    @property
    def model_id(self) -> str:
        """Cache key: architecture, weights, preprocessing, activation, precision and device type
        (a change in any is a new model: a CPU fp32 run and a CUDA bf16 run never share embeddings)."""
        prep = json.dumps(self.preprocessing, sort_keys=True, default=str)
        import hashlib

        act = f":{self.activation}" if self.activation else ""
        return (
            f"{self.role}:{self.arch}@{self.weights_sha256[:16]}:{hashlib.sha256(prep.encode()).hexdigest()[:8]}"
            f"{act}:{self.precision}:{self.device.type}"
        )

    def provenance(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "weights_sha256": self.weights_sha256,
            "folder": str(self.folder),
            "preprocessing": self.preprocessing,
            "precision": self.precision,
            **({"activation": self.activation, "openai_weights": self.openai_weights} if self.role == "clip" else {}),
            "model_id": self.model_id,
        }

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalized embeddings, in chunks of :data:`CPU_FORWARD_CHUNK` on CPU; a chunk of one is
        encoded as two (see :data:`MIN_BATCH`)."""
        start = time.perf_counter()
        n = pixels.shape[0]
        step = max(1, CPU_FORWARD_CHUNK if self.device.type == "cpu" else n)
        parts = []
        for i in range(0, n, step):
            chunk = pixels[i : i + step]
            size = chunk.shape[0]
            if size < MIN_BATCH:
                chunk = chunk.expand(MIN_BATCH, *chunk.shape[1:])
            with self._autocast():
                out = self._forward_images(chunk.to(self.device, non_blocking=True))
            parts.append(F.normalize(out.float(), dim=-1).cpu()[:size])
        out = torch.cat(parts) if parts else pixels.new_zeros((0, 0))
        with self._timing:
            self.forward_seconds += time.perf_counter() - start
        return out


class ClipEncoder(Encoder):
    role = "clip"

    def _forward_texts(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        start = time.perf_counter()
        n = len(texts)
        with self._autocast():
            out = self._forward_texts(list(texts) + list(texts[:1]) * (MIN_BATCH - n) if 0 < n < MIN_BATCH else list(texts))
        out = F.normalize(out.float(), dim=-1).cpu()[:n]
        with self._timing:
            self.forward_seconds += time.perf_counter() - start
        return out


class OpenClipEncoder(ClipEncoder):
    """open_clip model from a ``local-dir`` folder (open_clip_config.json + weights, the layout of
    the hub's open_clip repos) or a built-in architecture name with a bare checkpoint file (e.g.
    OpenAI's ViT-B-32.pt). OpenAI weights (``openai``; None: as the folder says, see
    :func:`names_openai`) get QuickGELU in both paths, whatever the config says, checked on the
    loaded model."""

    def __init__(
        self,
        folder: Path,
        device: str = "cpu",
        arch: str = "ViT-B-32",
        quick_gelu: bool = True,
        *,
        openai: bool | None = None,
        precision: str = "fp32",
    ) -> None:
        import open_clip
        from open_clip.factory import _find_checkpoint_in_dir

        folder = Path(folder)
        self.openai_weights = names_openai(folder) if openai is None else openai
        if (folder / "open_clip_config.json").is_file():
            name, pretrained = f"local-dir:{folder}", None
            extra = {"force_quick_gelu": True} if self.openai_weights else {}
            found = _find_checkpoint_in_dir(folder)
            ckpt = Path(found) if found else None
        else:
            ckpt = folder if folder.is_file() else _bare_checkpoint(folder)
            if ckpt is None:
                raise MissingWeightsError(f"no open_clip checkpoint or open_clip_config.json in {folder}")
            name, pretrained, extra = arch, str(ckpt), {"force_quick_gelu": quick_gelu or self.openai_weights}
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device="cpu", **extra)
        self.activation = checked_activation(model, self.openai_weights, folder)
        self.tokenizer = open_clip.get_tokenizer(name)
        self.preprocess = preprocess
        cfg = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
        super().__init__(
            model,
            arch=f"open_clip/{arch}",
            folder=folder,
            device=device,
            checkpoint=ckpt,
            preprocessing={"transform": repr(preprocess), **dict(cfg), **extra},
            precision=precision,
        )

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _forward_texts(self, texts: list[str]) -> torch.Tensor:
        for text in texts:
            n = len(self.tokenizer.encode(text)) + 2 if hasattr(self.tokenizer, "encode") else 0
            if n > CONTEXT_LENGTH:
                log.warning("prompt truncated to %d CLIP tokens (%d given): %r", CONTEXT_LENGTH, n, text[:80])
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


def _bare_checkpoint(folder: Path) -> Path | None:
    """open_clip's own file names first, then any single checkpoint (OpenAI's ViT-B-32.pt)."""
    for preferred in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.safetensors"):
        if (folder / preferred).is_file():
            return folder / preferred
    return next((p for p in sorted(folder.iterdir()) if p.suffix in (".pt", ".pth")), None)


class HFClipEncoder(ClipEncoder):
    """transformers CLIPModel with its CLIPProcessor (save_pretrained folder or hub snapshot);
    OpenAI weights get ``hidden_act="quick_gelu"`` in both towers, checked on the loaded model."""

    def __init__(self, folder: Path, device: str = "cpu", *, openai: bool | None = None, precision: str = "fp32") -> None:
        from transformers import CLIPConfig, CLIPModel, CLIPProcessor

        folder = Path(folder)
        self.openai_weights = names_openai(folder) if openai is None else openai
        config = CLIPConfig.from_pretrained(folder)
        if self.openai_weights:
            config.text_config.hidden_act = config.vision_config.hidden_act = "quick_gelu"
        model = CLIPModel.from_pretrained(folder, config=config)
        self.activation = checked_activation(model, self.openai_weights, folder)
        self.processor = CLIPProcessor.from_pretrained(folder)
        self.preprocess = _HFPixels(self.processor.image_processor)
        super().__init__(
            model,
            arch=f"transformers/{model.config.model_type}",
            folder=folder,
            device=device,
            preprocessing=self.processor.image_processor.to_dict(),
            precision=precision,
        )

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixels))

    def _forward_texts(self, texts: list[str]) -> torch.Tensor:
        full = self.processor.tokenizer(texts)["input_ids"]
        for text, ids in zip(texts, full):
            if len(ids) > CONTEXT_LENGTH:
                log.warning("prompt truncated to %d CLIP tokens (%d given): %r", CONTEXT_LENGTH, len(ids), text[:80])
        tokens = self.processor.tokenizer(texts, padding=True, truncation=True, max_length=CONTEXT_LENGTH, return_tensors="pt").to(
            self.device
        )
        return _pooled(self.model.get_text_features(**tokens))


class _HFPixels:
    """A picklable PIL -> pixel tensor callable around a transformers image processor."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


def _pooled(out: Any) -> torch.Tensor:
    """transformers 5 returns an output object where 4.x returned the projected tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class TimmDinoEncoder(Encoder):
    """DINO ViT CLS embedding through timm, with DreamBooth's protocol: resize 256 (bicubic),
    center crop 224, ImageNet mean/std (timm's own default for this tag crops 0.9; we pin 0.875)."""

    role = "dino"

    def __init__(self, folder: Path, device: str = "cpu", *, precision: str = "fp32") -> None:
        import timm
        from timm.data import create_transform

        folder = Path(folder)
        cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        arch = cfg.get("architecture", "vit_small_patch16_224")
        model = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0)
        size = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        is_v1 = "dinov2" not in arch
        prep = {
            "input_size": (3, size, size),
            "interpolation": "bicubic",
            "crop_pct": size / 256 if is_v1 else model.pretrained_cfg.get("crop_pct", 0.875),
            "crop_mode": "center",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
        }
        self.preprocess = create_transform(**prep)
        checkpoint = next((folder / f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()), None)
        super().__init__(
            model,
            arch=f"timm/{arch}.{cfg.get('pretrained_cfg', {}).get('tag', 'dino')}",
            folder=folder,
            device=device,
            preprocessing={**prep, "transform": repr(self.preprocess)},
            checkpoint=checkpoint,
            precision=precision,
        )

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)


def load_clip(
    folder: Path, device: str = "cpu", arch: str = "ViT-B-32", *, openai: bool | None = None, precision: str = "fp32"
) -> ClipEncoder:
    """open_clip when the folder is in open_clip's layout (or holds a bare checkpoint), else a
    transformers CLIPModel; ``openai`` (None: as the folder says) forces QuickGELU."""
    folder = Path(folder)
    config = folder / "config.json"
    if (
        folder.is_dir()
        and not (folder / "open_clip_config.json").is_file()
        and config.is_file()
        and "model_type" in json.loads(config.read_text())
    ):
        return HFClipEncoder(folder, device, openai=openai, precision=precision)
    return OpenClipEncoder(folder, device, arch, openai=openai, precision=precision)


def load_dino(folder: Path, device: str = "cpu", *, precision: str = "fp32") -> TimmDinoEncoder:
    return TimmDinoEncoder(folder, device, precision=precision)


def names_openai(folder: Path) -> bool:
    """Whether a CLIP folder says it holds OpenAI's weights: its path (the hub cache folder of
    ``timm/vit_base_patch32_clip_224.openai`` or ``openai/clip-vit-base-patch32``) or its config
    (``_name_or_path``, a pretrained tag) names OpenAI. A folder that says nothing is not assumed to."""
    folder = Path(folder)
    if OPENAI_MARK in str(folder.resolve()).lower():
        return True
    for name in ("open_clip_config.json", "config.json"):
        path = folder / name if folder.is_dir() else folder.with_name(name)
        if path.is_file() and OPENAI_MARK in path.read_text(errors="replace").lower():
            return True
    return False


_QUICK_GELU = frozenset({"QuickGELU", "QuickGELUActivation"})
_GELU = frozenset({"GELU", "GELUActivation", "NewGELUActivation", "GELUTanh", "PytorchGELUTanh"})


def clip_activation(model: torch.nn.Module) -> str | None:
    """The activation of a loaded CLIP model's MLPs, read from its modules (not its config):
    "quick_gelu", "gelu", "mixed" (both kinds), or None (neither found)."""
    kinds = {type(m).__name__ for m in model.modules()}
    quick, gelu = bool(kinds & _QUICK_GELU), bool(kinds & _GELU)
    return "mixed" if quick and gelu else "quick_gelu" if quick else "gelu" if gelu else None


def checked_activation(model: torch.nn.Module, openai: bool, folder: Path) -> str | None:
    """The loaded model's activation; OpenAI weights without QuickGELU throughout are refused (their
    embeddings would be wrong by a few hundredths, silently)."""
    activation = clip_activation(model)
    if openai and activation != "quick_gelu":
        raise PicbenchError(
            f"CLIP weights in {folder} are OpenAI's, which need QuickGELU, but the loaded model's activation is {activation}; "
            "the loader must force quick_gelu (report this as a bug)"
        )
    return activation
