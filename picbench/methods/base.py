"""The method interface every generator implements, built-in or adapter or plugin.

A method declares what it supports, its default parameters and checkpoints, and turns a batch
of Samples into images. It never imports the runner: the runner caches, scores and stores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image

from picbench.checkpoints import HubFiles, weights_root
from picbench.methods.params import Param, check_params
from picbench.records import Sample

ModelSize = Literal["default", "tiny"]


def same_aspect(size: tuple[int, int], target: tuple[int, int]) -> bool:
    """True when ``size`` is ``target`` scaled by one factor, up to rounding one side to whole pixels."""
    (w, h), (tw, th) = size, target
    return round(w * th / tw) == h or round(h * tw / th) == w


@dataclass(frozen=True)
class Capabilities:
    """What a method can honour. The runner refuses samples a method cannot serve and marks
    metrics that do not apply (e.g. identity metrics for a method given no references)."""

    references: bool = True
    boxes: bool = False
    multi_subject: bool = False
    depth_order: bool = False


class Method(ABC):
    """Subclasses set the class attributes and implement :meth:`generate`.

    ``models="tiny"`` builds every network with small random weights of the real architecture:
    a smoke run whose images mean nothing and are labelled so everywhere.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    default_params: ClassVar[Mapping[str, Any]] = {}
    checkpoints: ClassVar[Mapping[str, str]] = {}
    # types and ranges of parameters, checked before any model loads (undeclared ones: the type of their default)
    param_specs: ClassVar[Mapping[str, Param]] = {}
    # False: images of the sample's aspect ratio at another size are accepted as they are (boxes
    # are normalized, so the metric engine maps them to the image's own size)
    exact_size: ClassVar[bool] = True
    # a smoke run's defaults (models="tiny": seconds on a CPU, not minutes); explicit parameters still win
    smoke_params: ClassVar[Mapping[str, Any]] = {}
    # the weights' dtype on CUDA (a torch dtype name); everywhere else, and in smoke runs, float32
    cuda_dtype: ClassVar[str] = "float32"
    # False: the seed is ignored and every call gives the same image (e.g. paste)
    seeded: ClassVar[bool] = True

    def __init__(
        self,
        *,
        models: ModelSize = "default",
        device: str = "cpu",
        params: Mapping[str, Any] | None = None,
        weights_dir: str | Path | None = None,
    ) -> None:
        unknown = set(params or {}) - set(self.default_params)
        if unknown:
            raise ValueError(f"method {self.name}: unknown parameter(s) {sorted(unknown)}; known: {sorted(self.default_params)}")
        self.models = models
        self.device = device
        self.params: dict[str, Any] = {**self.default_params, **(self.smoke_params if models == "tiny" else {}), **(params or {})}
        check_params(self.name, self.params, self.default_params, self.param_specs)
        # where checkpoints are looked up before the hub: the argument, else $PICBENCH_WEIGHTS_DIR
        self.weights_dir = weights_root(weights_dir)
        self._loaded: Any = None

    @property
    def smoke(self) -> bool:
        return self.models == "tiny"

    @property
    def dtype(self) -> Any:
        """The torch dtype the networks run in: :attr:`cuda_dtype` on a CUDA device, else float32
        (CPUs and MPS, and smoke runs, whose random weights overflow in half precision)."""
        import torch

        return getattr(torch, self.cuda_dtype) if str(self.device).startswith("cuda") and not self.smoke else torch.float32

    def load(self) -> Any:
        """The method's networks, built by :meth:`_load` on the first call and kept: the one
        lazy-load hook, so a method that is only listed or validated never loads weights."""
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def _load(self) -> Any:
        """Subclasses with networks build them here: small random weights when :attr:`smoke`, else
        the released checkpoints (from ``weights_dir`` or the hub cache; offline and absent, a
        MissingWeightsError naming the checkpoint)."""
        raise NotImplementedError(f"method {self.name} has no networks to load")

    def cache_params(self) -> dict[str, Any]:
        """Everything that changes the images: parameters plus model size (part of the cache key)."""
        return {**self.params, "models": self.models}

    def item_params(self, sample: Sample, seed: int) -> dict[str, Any]:
        """What else one (sample, seed) item's image depends on, beyond :meth:`cache_params`: part
        of that item's cache key only (e.g. the ``images`` method's file for it), so a change
        outside the item leaves its cached image and score in place."""
        return {}

    def downloads(self) -> tuple[HubFiles, ...]:
        """The hub files this method's networks load with its parameters, for ``picbench weights
        download`` (fetched into the --weights-dir layout); a method without networks has none."""
        return ()

    def supports(self, sample: Sample) -> str | None:
        """None if the method can serve ``sample``, else the reason it cannot."""
        if len(sample.subjects) > 1 and not self.capabilities.multi_subject:
            return f"{self.name} handles one subject, sample {sample.id} has {len(sample.subjects)}"
        return None

    @abstractmethod
    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        """One image per sample, of the sample's width x height. The same (sample, seed) gives the
        same image whatever the batch it comes in."""
