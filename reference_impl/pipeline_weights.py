"""Which base model and which LoRA a PositionIC pipeline is built from: one decision, and one remedy
text when UNO's LoRA is missing, for `picbench run` (the `positionic` and `uno` methods) and
`picbench train`.

- Base: a local diffusers FLUX folder, its copy under the weights folder (DIR/<hub id>), else the
  hub id (:func:`picbench.checkpoints.load_pretrained`); a smoke run builds the tiny random-weight
  components instead (the caller, which knows their seed).
- LoRA ``uno``: UNO's released ``dit_lora.safetensors`` (``bytedance-research/UNO``) from the weights
  folder or the hub cache; a smoke run without a local copy takes a random LoRA in UNO's key layout
  (:attr:`LoraSource.random_uno`), so it goes through the conversion the real file goes through.
- LoRA ``none``: no LoRA (plain FLUX.1-dev).
- anything else: a LoRA file, as a path or under the weights folder; it must exist.
Messages name the front end's own settings (:class:`WeightsSettings`): "the 'lora' parameter" and
"--weights-dir DIR" for a run, "model.init_lora" and "model.weights_dir" for training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from picbench.checkpoints import download_file, load_pretrained, local_checkpoint
from picbench.errors import MissingWeightsError
from picbench.reference_impl.lora import UNO_LORA_FILE, UNO_LORA_REPO

T = TypeVar("T")

UNO_LORA = "uno"
NO_LORA = "none"


@dataclass(frozen=True)
class WeightsSettings:
    """How a front end names the two settings a user changes to provide weights, for messages."""

    lora: str
    weights_dir: str


@dataclass(frozen=True)
class LoraSource:
    """The LoRA to load: `file` (UNO's released one or the user's), or, with `random_uno`, a random
    LoRA in UNO's layout made by the caller (its rank and seed); neither: no LoRA."""

    file: Path | None = None
    random_uno: bool = False


@dataclass(frozen=True)
class PipelineWeights:
    """The weights of one front end's PositionIC pipeline. `method` names the method in messages
    (its first word is what `picbench weights download` takes); `smoke`: random-weight models;
    `resolve` turns a LoRA path as given into a path (the trainer: relative to its config file)."""

    method: str
    weights_dir: Path | None
    smoke: bool
    settings: WeightsSettings
    resolve: Callable[[str], Path] = Path

    def load_base(self, base: str, loader: Callable[[str], T]) -> T:
        """`loader` on the local copy of `base`, else on the hub id; a hub miss names the checkpoint."""
        return load_pretrained(self.method, base, self.weights_dir, loader)

    def lora(self, choice: str) -> LoraSource:
        """The LoRA that `choice` (``uno``, ``none`` or a file) names."""
        if choice.lower() == NO_LORA:
            return LoraSource()
        if choice.lower() == UNO_LORA:
            file = self.uno_lora_file()
            return LoraSource(file, random_uno=file is None)
        file = local_checkpoint(choice, self.weights_dir) or self.resolve(choice)
        if not file.is_file():
            raise MissingWeightsError(
                f"method {self.method}: LoRA file {file} does not exist ({self.settings.lora}: a LoRA file, "
                f"or '{UNO_LORA}' or '{NO_LORA}', the built-in choices)"
            )
        return LoraSource(file)

    def uno_lora_file(self) -> Path | None:
        """UNO's released LoRA: its copy under the weights folder, else the hub cache; None in a smoke
        run without a local copy (the caller then uses a random LoRA in UNO's layout)."""
        if self.smoke and local_checkpoint(UNO_LORA_REPO, self.weights_dir) is None:
            return None
        return download_file(self.method, UNO_LORA_REPO, UNO_LORA_FILE, self.weights_dir, remedy=self.uno_lora_remedy)

    @property
    def uno_lora_remedy(self) -> str:
        """How to provide UNO's LoRA other than by downloading it: the one text for run and train."""
        return (
            f"put it under {self.settings.weights_dir} as DIR/{UNO_LORA_REPO}/{UNO_LORA_FILE}, "
            f"or set {self.settings.lora} to a LoRA file (or '{NO_LORA}')"
        )
