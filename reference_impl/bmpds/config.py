"""The BMPDS build config: a TOML file read by ``picbench.toml_config`` (typed, every key checked,
unknown keys refused; a :class:`~picbench.errors.ConfigError` names the file and the key). Shipped:
``reference_impl/configs/bmpds/`` (``CONFIG_DIR``). Sections and defaults::

    name = "bmpds"            # the pair set's name
    seed = 0                  # every random choice of every stage derives from it
    size = 512                # target width = height (the paper trains at 512)
    models = "default"        # or "tiny": random-weight models of the real architectures (smoke build)
    device = "cpu"
    weights_dir = ""          # the weights folder (DIR/<hub id>/, as `picbench weights download` fills it); "": $PICBENCH_WEIGHTS_DIR

    [sources]   subjects = ["dreambench", "msbench"]     # real subjects: DreamBench's 30, MS-Bench's living + object
    [stages]    single = 8, forward = 4, backward = 4     # candidates per stage
    [roles]                                                # see reference_impl/bmpds/roles.py
                subject_method = "uno", subject_params = {}, detector = "grounding-dino",
                detector_threshold = 0.35, caption_lm = false, steps = 28, fill_steps = 50,
                fill_guidance = 30.0, render_guidance = 3.5, max_sequence_length = 512
    [filter]    clip_i = 0.0, dino = 0.0, vlm = 0.0, use_vlm = false, keep_top = 0.25
    [weights]   ROLE = "DIR"  (segmenter, outpainter, renderer, caption_lm, detector, clip, dino, vlm_judge): a role's own folder

``fill_steps`` 50 and ``fill_guidance`` 30 are the defaults of diffusers' ``FluxFillPipeline`` (as on
FLUX.1-Fill-dev's model card); ``steps`` 28 and ``render_guidance`` 3.5 those of ``FluxPipeline``
(FLUX.1-dev's); ``max_sequence_length`` 512 both pipelines' (a test pins all of them to diffusers').
``keep_top`` is the fraction of each stage's candidates that pass the thresholds kept after caption
ranking (the paper's filtered PIC-98K kept about a quarter of PIC-400K, hence 0.25).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from picbench.errors import ConfigError
from picbench.toml_config import build, read_toml

CONFIG_DIR = Path(__file__).parents[1] / "configs" / "bmpds"
"""The shipped build configs: paper.toml (paper scale, GPUs), tiny.toml (a CPU smoke build)."""
SUBJECT_SOURCES = ("dreambench", "msbench")
MAX_CANDIDATES = 10**6
"""Bound on each stage's candidates (the paper's PIC-400K is 4e5 in all)."""
MAX_STEPS = 1000
MAX_GUIDANCE = 100.0


@dataclass(frozen=True)
class Sources:
    subjects: tuple[str, ...] = SUBJECT_SOURCES


@dataclass(frozen=True)
class Stages:
    single: int = 8
    forward: int = 4
    backward: int = 4


@dataclass(frozen=True)
class RoleSettings:
    subject_method: str = "uno"
    subject_params: Mapping[str, Any] = field(default_factory=dict)
    detector: str = "grounding-dino"
    detector_threshold: float = 0.35
    caption_lm: bool = False
    steps: int = 28
    fill_steps: int = 50
    fill_guidance: float = 30.0
    render_guidance: float = 3.5
    max_sequence_length: int = 512


@dataclass(frozen=True)
class FilterCfg:
    clip_i: float = 0.0
    dino: float = 0.0
    vlm: float = 0.0
    use_vlm: bool = False
    keep_top: float = 0.25


@dataclass(frozen=True)
class BmpdsConfig:
    name: str = "bmpds"
    seed: int = 0
    size: int = 512
    models: Literal["default", "tiny"] = "default"
    device: str = "cpu"
    weights_dir: str = ""
    sources: Sources = Sources()
    stages: Stages = Stages()
    roles: RoleSettings = RoleSettings()
    filter: FilterCfg = FilterCfg()
    weights: Mapping[str, str] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        """What decides a candidate's content (device excluded): part of every unit's store key."""
        return {
            "seed": self.seed,
            "size": self.size,
            "models": self.models,
            "sources": list(self.sources.subjects),
            "models_cfg": {f.name: getattr(self.roles, f.name) for f in fields(RoleSettings)},  # the key before [roles]: store keys stay
            "weights": dict(self.weights),
        }


def load_config(path: str | Path) -> BmpdsConfig:
    """Read and check a BMPDS config file (TOML); ``[models_cfg]``, the table's name before
    ``[roles]``, is read with a FutureWarning."""
    path = Path(path)
    raw = read_toml(path)
    if "models_cfg" in raw and "roles" not in raw:
        warnings.warn(f"{path}: [models_cfg] is deprecated; write [roles]", FutureWarning, stacklevel=2)
        raw["roles"] = raw.pop("models_cfg")
    config = build(BmpdsConfig, raw, path, "")
    _check(config, path)
    return config


def _check(c: BmpdsConfig, file: Path) -> None:
    """Values no stage can use, refused before any model loads."""

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(why, file=file, field=key)

    if c.size < 64 or c.size % 16:
        raise bad("size", f"must be a multiple of 16, at least 64 (FLUX packs 2x2 latents of an 8x VAE), got {c.size}")
    from picbench.environment import check_device
    from picbench.errors import DeviceError

    try:
        check_device(c.device)
    except DeviceError as exc:
        raise bad("device", str(exc).replace("--device", "device")) from None
    if c.size > 4096:
        raise bad("size", f"must be at most 4096, got {c.size}")
    for key in ("single", "forward", "backward"):
        if not 0 <= getattr(c.stages, key) <= MAX_CANDIDATES:
            raise bad(f"stages.{key}", f"must be in [0, {MAX_CANDIDATES}]")
    if c.stages.forward and not c.stages.single:
        raise bad("stages.forward", "the forward stage pairs single-stage results: needs stages.single > 0")
    unknown = [s for s in c.sources.subjects if s not in SUBJECT_SOURCES]
    if unknown or not c.sources.subjects:
        raise bad("sources.subjects", f"must be a non-empty subset of {list(SUBJECT_SOURCES)}, got {list(c.sources.subjects)}")
    if not 0.0 < c.filter.keep_top <= 1.0:
        raise bad("filter.keep_top", f"must be in (0, 1], got {c.filter.keep_top}")
    for key in ("steps", "fill_steps"):
        if not 1 <= getattr(c.roles, key) <= MAX_STEPS:
            raise bad(f"roles.{key}", f"must be in [1, {MAX_STEPS}]")
    for key in ("fill_guidance", "render_guidance"):
        if not 0.0 <= getattr(c.roles, key) <= MAX_GUIDANCE:
            raise bad(f"roles.{key}", f"must be in [0, {MAX_GUIDANCE:g}]")
    if not 0.0 <= c.roles.detector_threshold <= 1.0:
        raise bad("roles.detector_threshold", "must be in [0, 1]")
    if not 1 <= c.roles.max_sequence_length <= 512:
        raise bad("roles.max_sequence_length", "must be in [1, 512] (T5's length in FLUX)")
