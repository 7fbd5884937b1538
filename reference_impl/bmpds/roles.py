"""The roles of BMPDS (segmenter, outpainter, renderer, caption writer, subject model, detector): their
models, each loaded from a local folder on first use.

Roles and their default checkpoints (hub ids of the released models; a folder is found by
``picbench.metrics.weights.resolve``: ``[weights] ROLE = DIR`` in the config, else the weights
folder (``weights_dir``, else ``$PICBENCH_WEIGHTS_DIR``) as ``DIR/<hub id>/`` (or ``DIR/<role>/``),
else the Hugging Face cache, else a :class:`MissingWeightsError` naming the model and
``picbench weights download --data`` when offline). ``models = "tiny"`` takes the random-weight
models of ``picbench.tiny.data_models`` instead (a smoke build).

* ``segmenter``: SAM through transformers (``SamModel``), prompted with one box;
* ``outpainter``: diffusers ``FluxFillPipeline``; in its mask white = repaint, black = keep;
* ``renderer``: diffusers ``FluxPipeline`` (backward stage: caption -> image);
* ``caption_lm``: a causal LM through transformers (chat template, greedy); optional;
* the subject model is a picbench method (``uno`` by default) and the detector one of
  ``picbench.metrics.detectors``, loaded the way ``picbench run`` loads them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from picbench.checkpoints import TRANSFORMERS_FILES, HubFiles, diffusers_folder
from picbench.layouts import listed
from picbench.metrics.weights import resolve, weights_sha256

HUB_IDS = {
    "segmenter": "facebook/sam-vit-huge",
    "outpainter": "black-forest-labs/FLUX.1-Fill-dev",
    "renderer": "black-forest-labs/FLUX.1-dev",
    "caption_lm": "Qwen/Qwen2.5-7B-Instruct",
}
_TINY_ROLE = {"segmenter": "sam", "outpainter": "flux_fill", "renderer": "flux", "caption_lm": "caption_lm"}
DOWNLOAD = "picbench weights download --data --weights-dir DIR"
"""The command that fetches the roles' weights (the missing-weights error names it)."""


def downloads() -> tuple[HubFiles, ...]:
    """What ``picbench weights download --data`` fetches: each role's checkpoint as its loader reads it."""
    return (
        HubFiles(HUB_IDS["segmenter"], TRANSFORMERS_FILES),
        diffusers_folder(HUB_IDS["outpainter"]),
        diffusers_folder(HUB_IDS["renderer"]),
        HubFiles(HUB_IDS["caption_lm"], TRANSFORMERS_FILES),
    )


def dtype_for(device: str) -> torch.dtype:
    """bf16 on CUDA (a 12B FLUX is 24 GB there, 48 GB in fp32), fp32 on the CPU."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def model_folder(role: str, models: str, weights: Mapping[str, str | Path], weights_dir: str | Path | None = None) -> Path:
    """The local folder of a role's model (see the module docstring for the lookup order)."""
    if role in weights or models != "tiny":
        return resolve(role, HUB_IDS[role], weights, weights_dir, download=DOWNLOAD).folder
    from picbench.tiny.data_models import tiny_data_weights

    return tiny_data_weights(_TINY_ROLE[role])


def folder_hash(folder: Path) -> str:
    """sha256 of a model folder's checkpoint files (for diffusers folders: of every component's)."""
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and any(q.suffix in (".safetensors", ".bin") for q in p.iterdir()))
    if not subfolders:
        return weights_sha256(folder)
    import hashlib

    h = hashlib.sha256()
    for sub in subfolders:
        h.update(sub.name.encode())
        h.update(weights_sha256(sub).encode())
    return h.hexdigest()


class Segmenter:
    """SAM prompted with one pixel box; returns a boolean mask of the image's size."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        from transformers import SamModel, SamProcessor

        self.model = SamModel.from_pretrained(folder).eval().to(device)
        self.processor = SamProcessor.from_pretrained(folder)
        self.device = device

    @torch.no_grad()
    def segment(self, image: Image.Image, box: Sequence[float]) -> np.ndarray:
        inputs = self.processor(image, input_boxes=[[list(map(float, box))]], return_tensors="pt").to(self.device)
        out = self.model(**inputs, multimask_output=False)
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )
        return masks[0][0, 0].numpy().astype(bool)


class Outpainter:
    """FLUX Fill: repaint where the mask is white, keep where it is black."""

    def __init__(
        self, folder: Path, device: str = "cpu", *, steps: int = 50, guidance: float = 30.0, max_sequence_length: int = 512
    ) -> None:
        from diffusers import FluxFillPipeline

        self.pipe = FluxFillPipeline.from_pretrained(folder, dtype=dtype_for(device)).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.steps, self.guidance, self.max_sequence_length = steps, guidance, max_sequence_length

    def outpaint(self, prompt: str, image: Image.Image, mask: Image.Image, seed: int) -> np.ndarray:
        """HxWx3 floats in [0, 1] (``output_type="np"``, so non-finite pixels can be seen)."""
        return self.pipe(
            prompt=prompt,
            image=image,
            mask_image=mask,
            height=image.height,
            width=image.width,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            max_sequence_length=self.max_sequence_length,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
        ).images[0]


class Renderer:
    """FLUX text to image (the backward stage's first step)."""

    def __init__(
        self, folder: Path, device: str = "cpu", *, steps: int = 28, guidance: float = 3.5, max_sequence_length: int = 512
    ) -> None:
        from diffusers import FluxPipeline

        self.pipe = FluxPipeline.from_pretrained(folder, dtype=dtype_for(device)).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.steps, self.guidance, self.max_sequence_length = steps, guidance, max_sequence_length

    def render(self, prompt: str, width: int, height: int, seed: int) -> np.ndarray:
        """HxWx3 floats in [0, 1] (``output_type="np"``, so non-finite pixels can be seen)."""
        return self.pipe(
            prompt=prompt,
            width=width,
            height=height,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            max_sequence_length=self.max_sequence_length,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
        ).images[0]


CAPTION_INSTRUCTION = (
    "Write one short, concrete photo caption (one sentence, under 30 words) of a scene that shows all of: {subjects}. "
    "Name each of them with exactly these words. Answer with the caption only."
)
CAPTION_TEMPLATES = (
    "{subjects} {context}",
    "a photo of {subjects} {context}",
    "{subjects} together {context}",
)


@dataclass(frozen=True)
class Caption:
    text: str
    source: str  # "lm" or "template"
    note: str | None = None  # why the template was used


class CaptionWriter:
    """A multi-subject caption from a local causal LM, or a seeded template when no LM is given or
    its answer does not name every subject's class word."""

    def __init__(self, folder: Path | None, device: str = "cpu", *, max_new_tokens: int = 48) -> None:
        self.model = self.tokenizer = None
        if folder is not None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype_for(device)).eval().to(device)
        self.device, self.max_new_tokens = device, max_new_tokens

    def write(self, nouns: Sequence[str], class_words: Sequence[str], contexts: Sequence[str], rng: random.Random) -> Caption:
        subjects = listed(nouns)
        template = rng.choice(CAPTION_TEMPLATES).format(subjects=subjects, context=rng.choice(contexts))
        if self.model is None:
            return Caption(template, "template", "no caption_lm configured")
        answer = self._generate(CAPTION_INSTRUCTION.format(subjects=subjects))
        absent = [w for w in class_words if w.lower() not in answer.lower()]
        if not answer or absent:
            return Caption(template, "template", f"the LM's caption {answer[:80]!r} does not name {absent or 'anything'}")
        return Caption(answer, "lm")

    @torch.no_grad()
    def _generate(self, instruction: str) -> str:
        assert self.tokenizer is not None and self.model is not None
        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False)
        text = self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        return text.splitlines()[0].strip() if text else ""


def load_detector(
    name: str, models: str, weights: Mapping[str, str | Path], device: str, threshold: float | None, weights_dir: str | Path | None = None
) -> Any:
    """A picbench detector (as ``picbench run --detector NAME`` loads it)."""
    from picbench.metrics.detectors import DETECTORS

    cls = DETECTORS.get(name)
    if "detector" in weights or models != "tiny":
        folder = resolve("detector", cls.hub_id or name, weights, weights_dir).folder
    else:
        folder = cls.smoke_folder()
    kwargs = {"box_threshold": threshold} if threshold is not None and name == "grounding-dino" else {}
    return cls(folder, device, **kwargs)
