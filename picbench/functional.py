"""Metrics for one image at a time, the functional twins of the engine's metrics (as torchmetrics
pairs each metric class with a function): ``clip_i(image, references)``, ``dino(image,
references)``, ``clip_t(image, prompt)`` and ``iou(boxes_a, boxes_b)``.

They give the engine's numbers (tests/test_api.py holds them equal): the same models and weights
lookup (``models="tiny"`` for random weights, ``weights={"clip": DIR}`` for a local folder), the
same decoding and preprocessing, the same forward path, and the same formulas (cosine of
L2-normalized embeddings on a 0..1 scale; identity is the mean over the references; IoU of pixel
xyxy boxes). Models are built on first use and kept for the next call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from picbench.errors import PicbenchError

if TYPE_CHECKING:
    from PIL import Image

    from picbench.metrics.engine import MetricEngine

Box = Sequence[float]


def clip_i(
    image: Image.Image | str | Path,
    references: Sequence[Image.Image | str | Path],
    *,
    models: Literal["default", "tiny"] = "default",
    device: str = "cpu",
    weights: Mapping[str, str | Path] | None = None,
) -> float:
    """Mean cosine of the CLIP image embeddings of ``image`` and each of ``references``."""
    return _identity("clip", image, references, models, device, weights)


def dino(
    image: Image.Image | str | Path,
    references: Sequence[Image.Image | str | Path],
    *,
    models: Literal["default", "tiny"] = "default",
    device: str = "cpu",
    weights: Mapping[str, str | Path] | None = None,
) -> float:
    """Mean cosine of the DINO ViT-S/16 CLS embeddings of ``image`` and each of ``references``."""
    return _identity("dino", image, references, models, device, weights)


def clip_t(
    image: Image.Image | str | Path,
    prompt: str,
    *,
    models: Literal["default", "tiny"] = "default",
    device: str = "cpu",
    weights: Mapping[str, str | Path] | None = None,
) -> float:
    """Cosine of the CLIP embeddings of ``image`` and ``prompt`` (truncated to 77 tokens)."""
    if not isinstance(prompt, str):
        raise PicbenchError(f"clip_t: the prompt must be a string, got {type(prompt).__name__}")
    engine = _engine(models, device, _frozen(weights))
    embedding = engine.embed_images("clip", [_generated(image)])[0]
    return float(embedding @ engine.embed_prompts([prompt])[0])


def iou(boxes_a: Box | Sequence[Box], boxes_b: Box | Sequence[Box]) -> float | list[float]:
    """IoU of two pixel xyxy boxes, or of each pair of two equally long lists of boxes (the
    engine's IoU of a subject's target box and the detection matched to it)."""
    import numpy as np

    from picbench.metrics.boxes import box_problem, iou_matrix

    single = _is_box(boxes_a) and _is_box(boxes_b)
    a, b = ([boxes_a], [boxes_b]) if single else (list(boxes_a), list(boxes_b))
    if len(a) != len(b):
        raise PicbenchError(f"iou: {len(a)} boxes against {len(b)}; give two boxes or two lists of the same length")
    for name, boxes in (("boxes_a", a), ("boxes_b", b)):
        for k, box in enumerate(boxes):
            problem = box_problem(box) if _is_box(box) else f"{box!r} is not 4 numbers"
            if problem is not None:
                raise PicbenchError(f"iou: {name}[{k}]: {problem}")
    values = [float(v) for v in np.diag(iou_matrix(np.array(a, dtype=float), np.array(b, dtype=float)))]
    return values[0] if single else values


# -- helpers -------------------------------------------------------------------------------------


def _identity(
    role: str,
    image: Image.Image | str | Path,
    references: Sequence[Image.Image | str | Path],
    models: str,
    device: str,
    weights: Mapping[str, str | Path] | None,
) -> float:
    """The engine's identity score of one subject: the mean over its references of the cosine
    with the image (Features.identity_to)."""
    if isinstance(references, (str, Path)) or not len(references):
        raise PicbenchError("references must be a non-empty list of images or image paths")
    import numpy as np

    engine = _engine(models, device, _frozen(weights))
    embedding = engine.embed_images(role, [_generated(image)])[0]
    vectors = engine.embed_images(role, [_reference(r) for r in references])
    return float(np.mean([float(embedding @ v) for v in vectors]))


def _generated(image: Image.Image | str | Path) -> Image.Image:
    """The scored image as the engine decodes a generation: RGB, refusing unreadable, non-finite or blank images."""
    from picbench.metrics.decoding import decode_generated, refuse_blank

    if isinstance(image, (str, Path)):
        return decode_generated(Path(image))
    return refuse_blank(_pil(image).convert("RGB"), "given")


def _reference(image: Image.Image | str | Path) -> Image.Image:
    """A reference as the engine decodes one (picbench.imaging: RGBA onto white, 16-bit to 8-bit, ...)."""
    from picbench.imaging import load_rgb, to_rgb

    if isinstance(image, (str, Path)):
        return load_rgb(Path(image))
    image = _pil(image)
    return image if image.mode == "RGB" else to_rgb(image)


def _pil(image: object) -> Image.Image:
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise PicbenchError(f"expected a PIL image or an image path, got {type(image).__name__}")
    return image


def _is_box(value: object) -> bool:
    return isinstance(value, Sequence) and len(value) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _frozen(weights: Mapping[str, str | Path] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((role, str(folder)) for role, folder in (weights or {}).items()))


@lru_cache(maxsize=4)
def _engine(models: str, device: str, weights: tuple[tuple[str, str], ...]) -> MetricEngine:
    """One engine per configuration, with both encoders and the batch size of ``picbench run``'s
    default (so the same forward workers, each with the same torch threads, as a default run) and
    no detector."""
    from picbench.environment import check_device
    from picbench.metrics.engine import MetricEngine
    from picbench.runner import RunConfig

    return MetricEngine(
        models=models,  # type: ignore[arg-type]
        device=check_device(device),
        metrics=("clip_i", "dino", "clip_t"),
        detector=None,
        weights=dict(weights) or None,
        batch_size=RunConfig.batch_size,
    )
