"""The metric engine's models: where each one's weights are (``--weights ROLE=DIR``, the tiny
random-weight model of a smoke run, or the registered hub id: :func:`picbench.metrics.weights.resolve`)
and the models themselves. Folders are found at once, so missing weights stop a run before it
generates anything; models are built on first use, so a rerun with nothing left to score builds none."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from picbench.metrics.detectors import DETECTORS, Detector
from picbench.metrics.encoders import Encoder, load_clip, load_dino
from picbench.metrics.weights import hub_id, resolve

ENCODER_ROLES = ("clip", "dino")


class MetricModels:
    """The folders of the encoders (by role) and of the detector one engine runs, and their loading."""

    def __init__(
        self,
        *,
        smoke: bool,
        device: str,
        roles: tuple[str, ...],
        detector: str | None,
        weights: Mapping[str, str | Path],
        weights_dir: str | Path | None,
        clip_arch: str,
        precision: str,
    ) -> None:
        """``detector``: the registered name of the detector the engine runs, None for none;
        ``weights_dir``: the weights folder (DIR/<hub id>), None for $PICBENCH_WEIGHTS_DIR."""
        self.smoke, self.device, self.roles, self.detector_name = smoke, device, roles, detector
        self.clip_arch, self.precision, self.weights, self.weights_dir = clip_arch, precision, weights, weights_dir
        self.folders = {role: self._folder(role, role) for role in roles}
        if detector is not None:
            self.folders["detector"] = self._folder("detector", detector)

    def _folder(self, role: str, model: str) -> Path | None:
        """The local folder of a model: --weights ROLE=DIR, the tiny model of a smoke run, or the
        documented lookup of its hub id (weights.resolve)."""
        if role == "detector":
            cls = DETECTORS.get(model)
            if cls.hub_id is None and role not in self.weights:
                return None
            if role not in self.weights and self.smoke:
                return cls.smoke_folder()
            return resolve(role, cls.hub_id or model, self.weights, self.weights_dir).folder
        if role in self.weights:
            return resolve(role, hub_id(role), self.weights, self.weights_dir).folder
        if self.smoke:
            from picbench.tiny.metric_models import tiny_weights

            return tiny_weights(model)
        return resolve(role, hub_id(role), None, self.weights_dir).folder

    def model_folder(self, role: str, tiny: str) -> Path:
        """For metrics with models of their own (``Metric.load``): ``--weights ROLE=DIR``, the
        tiny model ``tiny`` of a smoke run, else the hub id registered for ``role``."""
        if role in self.weights:
            return resolve(role, hub_id(role), self.weights, self.weights_dir).folder
        if self.smoke:
            from picbench.tiny.metric_models import tiny_weights

            return tiny_weights(tiny)
        return resolve(role, hub_id(role), None, self.weights_dir).folder

    def clip_is_openai(self) -> bool | None:
        """True where the CLIP role is the registered model and that is OpenAI's (the tiny model of a
        smoke run stands in for it); None for a folder given with ``--weights clip=DIR``: the
        folder itself says (:func:`~picbench.metrics.encoders.names_openai`)."""
        if "clip" in self.weights:
            return None
        return "openai" in hub_id("clip").lower()

    def load(self) -> tuple[dict[str, Encoder], Detector | None]:
        """Build the encoders and the detector from their folders."""
        encoders: dict[str, Encoder] = {}
        if "clip" in self.roles:
            encoders["clip"] = load_clip(
                self.folders["clip"],  # type: ignore[arg-type]
                self.device,
                self.clip_arch,
                openai=self.clip_is_openai(),
                precision=self.precision,
            )
        if "dino" in self.roles:
            encoders["dino"] = load_dino(self.folders["dino"], self.device, precision=self.precision)  # type: ignore[arg-type]
        detector = None
        if self.detector_name is not None:
            detector = DETECTORS.get(self.detector_name)(self.folders["detector"], self.device)  # type: ignore[arg-type]
        return encoders, detector
