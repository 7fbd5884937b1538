"""The method interface every generator implements, built-in or adapter or plugin.

A method declares what it supports, its default parameters and checkpoints, and turns a batch
of Samples into images. It never imports the runner: the runner caches, scores and stores.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Sequence

from PIL import Image

from picbench.methods.params import Param, check_params
from picbench.metrics.weights import WEIGHTS_ENV
from picbench.records import Sample

ModelSize = Literal["default", "tiny"]


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
        self.params: dict[str, Any] = {**self.default_params, **(params or {})}
        check_params(self.name, self.params, self.default_params, self.param_specs)
        # where checkpoints are looked up before the hub: the argument, else $PICBENCH_WEIGHTS_DIR
        env_dir = os.environ.get(WEIGHTS_ENV)
        self.weights_dir = Path(weights_dir).expanduser() if weights_dir else Path(env_dir).expanduser() if env_dir else None

    @property
    def smoke(self) -> bool:
        return self.models == "tiny"

    def cache_params(self) -> dict[str, Any]:
        """Everything that changes the images: parameters plus model size (part of the cache key)."""
        return {**self.params, "models": self.models}

    def supports(self, sample: Sample) -> str | None:
        """None if the method can serve ``sample``, else the reason it cannot."""
        if len(sample.subjects) > 1 and not self.capabilities.multi_subject:
            return f"{self.name} handles one subject, sample {sample.id} has {len(sample.subjects)}"
        return None

    @abstractmethod
    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        """One image per sample, of the sample's width x height. The same (sample, seed) gives the
        same image whatever the batch it comes in."""
