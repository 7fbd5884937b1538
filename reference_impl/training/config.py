"""The trainer's typed configuration, read from TOML with every key checked (`picbench.toml_config`).

A config file has the keys `models` and `weights_dir` at its top, the tables `[model]`, `[data]`,
`[train]`, `[optim]`, `[checkpoint]`, `[eval]` and one `[[stages]]` table per curriculum stage.
Unknown keys and impossible values are refused with the file and the key (`stages[1].lr`) before
any model is built: every number is finite and
within bounds no sane run leaves (`MAX_STEPS`, `MAX_LR`, `MAX_GUIDANCE`, ...), so a typo such as
`lr = 1e30` or `guidance = nan` never reaches the loop; defaults are the paper's
recipe (`configs/train/paper.toml` spells them out) and where they come from is said per field.
The spellings from before one smoke switch and one weights key (`[model] base = "tiny"`,
`[model] weights_dir`, `[eval] models`) are read with a FutureWarning saying what to write instead.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from picbench.errors import ConfigError
from picbench.reference_impl.vaa import VAASettings
from picbench.toml_config import build, read_toml

CONFIG_DIR = Path(__file__).parents[1] / "configs" / "train"
"""The shipped configs: paper.toml (the paper's recipe), tiny.toml (CPU, minutes), accelerate/."""
MAX_STEPS = 10**8
"""Bound on step counts and intervals (the paper trains 18k steps)."""
MAX_LR = 1.0
MAX_GUIDANCE = 100.0
MAX_SIGMA_DELTA = 1000.0
MAX_RANK = 4096
MAX_BATCH = 2**16


@dataclass(frozen=True)
class ModelConfig:
    base: str = "black-forest-labs/FLUX.1-dev"
    """A local diffusers FLUX folder or a hub id (DIR/<hub id> under `weights_dir`, else the hub cache);
    unused when `models = "tiny"`."""
    init_lora: str = "uno"
    """"uno": UNO's released LoRA (PositionIC is initialized from UNO); "none": fresh; or a LoRA file."""
    rank: int = 512
    """The paper's rank (UNO's `lora_rank=512`)."""
    vaa: bool = True
    """VAA in every double and single block; false trains UNO's objective (ablation)."""
    attention_backend: str = "auto"
    sigma: float = 3.0
    delta: float = 1.0
    gradient_checkpointing: bool = True
    """Per block, as UNO's `gradient_checkpoint=True` (diffusers' `enable_gradient_checkpointing`)."""

    @property
    def vaa_settings(self) -> VAASettings:
        """`vaa`, `sigma`, `delta` and `attention_backend` as the one record training and evaluation pass on."""
        return VAASettings(self.vaa, self.sigma, self.delta, self.attention_backend)


@dataclass(frozen=True)
class DataConfig:
    pairs: str = "pairs/positionic-train"
    """A pair set folder (`picbench.pairs`), relative to the config file's folder or absolute."""
    buckets: tuple[tuple[int, int], ...] = ((512, 512), (448, 576), (576, 448), (384, 640), (640, 384))
    """(width, height) resolution buckets, multiples of 16, about 512^2 pixels (UNO trains at 512)."""
    caption_dropout: float = 0.1
    """UNO's `text_dropout=0.1`: the prompt is replaced by "" with this probability."""
    ref_long_side: int = 0
    """0: UNO's inference rule by reference count (512 for one, 320 for more), as at inference.
    UNO's trainer instead stretches each reference to the ~512^2 bucket nearest the batch's mean
    aspect (`uno/dataset/uno.py:27-58,109-114` @ d305981); picbench trains on the token grids it
    samples with, since PositionIC's paper does not say and UNO's sampler never sees 512^2 references
    with two or more subjects."""
    cache_latents: bool = False
    """Keep each pair's VAE posterior (mean and std tokens) in memory after its first use (exact:
    both are deterministic; each step draws its sample). About 1 MB per 512 px pair in float32;
    off by default for large sets."""


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    global_batch: int = 128
    """The paper's global batch (8 x A100)."""
    micro_batch: int = 4
    """Per process and forward pass; accumulation fills the global batch (8 GPUs x 4 x 4 steps = 128)."""
    timesteps: Literal["uniform", "logit_normal"] = "uniform"
    """UNO: uniform over the 1000 resolution-shifted times; logit-normal (SD3) is the option."""
    guidance: float = 1.0
    """FLUX's guidance embedding during training (UNO's `guidance_vec` of ones)."""
    max_grad_norm: float = 1.0
    mixed_precision: Literal["bf16", "no"] = "bf16"
    """bf16 base weights and autocast on CUDA (fp32 LoRA); ignored on CPU, which runs fp32."""
    ema_decay: float = 0.0
    """0: no EMA; else an EMA of the LoRA, saved beside it (UNO's `ema_decay`)."""
    trackers: tuple[str, ...] = ()
    """accelerate trackers besides the JSONL log, e.g. ["tensorboard"] or ["wandb"] (when installed)."""


@dataclass(frozen=True)
class OptimConfig:
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_steps: int = 100
    """Linear warmup at the start of each stage (UNO's `lr_warmup_steps=100`), then cosine to 0."""


@dataclass(frozen=True)
class StageConfig:
    name: str
    steps: int
    lr: float = 1e-5
    split: Literal["single", "multi", "all"] = "all"
    min_subjects: int = 1
    max_subjects: int = 99


@dataclass(frozen=True)
class CheckpointConfig:
    out: str = "runs/train/positionic"
    """Output folder, relative to the config file's folder or absolute."""
    every: int = 500
    keep: int = 2


@dataclass(frozen=True)
class EvalConfig:
    every: int = 0
    """0: no evaluation during training; N: generate and score the validation subset every N steps."""
    bench: str = "positionic-open"
    n_single: int = 4
    n_multi: int = 4
    steps: int = 25
    guidance: float = 4.0
    seed: int = 0
    detector: str = "grounding-dino"
    data_dir: str = ""


@dataclass(frozen=True)
class Config:
    models: Literal["default", "tiny"] = "default"
    """"tiny": random-weight models throughout (the FLUX base and the metric models), a smoke run on a
    CPU whose losses and scores mean nothing; picbench's one smoke switch (`picbench run --models`)."""
    weights_dir: str = ""
    """The weights folder (DIR/black-forest-labs/FLUX.1-dev, DIR/bytedance-research/UNO/dit_lora.safetensors),
    relative to the config file's folder or absolute, as `picbench run --weights-dir`; "": $PICBENCH_WEIGHTS_DIR."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stages: tuple[StageConfig, ...] = ()
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    source: Path | None = None
    """The file this came from (relative paths resolve against its folder)."""

    @property
    def smoke(self) -> bool:
        return self.models == "tiny"

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.source is None else Path(os.path.normpath(self.source.parent / p))

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per process per optimizer step."""
        return self.train.global_batch // (world_size * self.train.micro_batch)

    def check_world(self, world_size: int) -> None:
        per_step = world_size * self.train.micro_batch
        if self.train.global_batch % per_step:
            raise ConfigError(
                f"{self.train.global_batch} is not divisible by world size {world_size} x train.micro_batch {self.train.micro_batch}",
                file=self.source,
                field="train.global_batch",
            )


def load_config(path: str | Path) -> Config:
    """Read and check a TOML config; raises :class:`ConfigError` naming the file and key."""
    path = Path(path)
    raw = _upgrade(read_toml(path), path)
    config = build(Config, raw, path, "", source=path.resolve())
    if not config.stages:
        raise ConfigError("at least one [[stages]] table is required (name, steps, lr, split)", file=path)
    _check_values(config, path)
    return config


def _upgrade(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """The spellings from before one smoke switch and one weights key, moved to today's with a
    FutureWarning; `[eval] models = "tiny"` alone (tiny metric models beside a real base) has no
    equivalent and is refused."""
    model, ev = raw.get("model"), raw.get("eval")
    if isinstance(model, dict) and model.get("base") == "tiny":
        _deprecated(path, '[model] base = "tiny"', 'models = "tiny" at the top of the file')
        del model["base"]
        raw.setdefault("models", "tiny")
    if isinstance(model, dict) and "weights_dir" in model:
        _deprecated(path, "[model] weights_dir", "weights_dir at the top of the file")
        raw.setdefault("weights_dir", model.pop("weights_dir"))
    if isinstance(ev, dict) and "models" in ev:
        if ev["models"] == "tiny" and raw.get("models") != "tiny":
            raise ConfigError(
                'is gone: models = "tiny" at the top of the file makes every model tiny (the base and the metric models); '
                "without it, evaluation scores with the real metric models",
                file=path,
                field="eval.models",
            )
        _deprecated(path, "[eval] models", "models at the top of the file (one smoke switch for every model)")
        del ev["models"]
    return raw


def _deprecated(path: Path, old: str, new: str) -> None:
    warnings.warn(f"{path}: {old} is deprecated; write {new}", FutureWarning, stacklevel=4)


def _check_values(c: Config, path: Path) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(what, file=path, field=key)

    need(1 <= c.model.rank <= MAX_RANK, "model.rank", f"must be in [1, {MAX_RANK}]")
    need(0 < c.model.sigma <= MAX_SIGMA_DELTA, "model.sigma", f"must be in (0, {MAX_SIGMA_DELTA:g}] (VWR's sigma)")
    need(0 < c.model.delta <= MAX_SIGMA_DELTA, "model.delta", f"must be in (0, {MAX_SIGMA_DELTA:g}] (VWR's delta)")
    need(
        c.model.attention_backend in ("auto", "sdpa", "sdpa_lowrank", "flex"),
        "model.attention_backend",
        "must be auto, sdpa, sdpa_lowrank or flex",
    )
    need(bool(c.data.buckets), "data.buckets", "must name at least one (width, height)")
    for i, (w, h) in enumerate(c.data.buckets):
        need(w >= 16 and h >= 16 and w % 16 == 0 and h % 16 == 0, f"data.buckets[{i}]", f"({w}, {h}) must be multiples of 16")
    need(0.0 <= c.data.caption_dropout < 1.0, "data.caption_dropout", "must be in [0, 1)")
    need(c.data.ref_long_side == 0 or c.data.ref_long_side >= 16, "data.ref_long_side", "must be 0 (UNO's rule) or >= 16")
    need(1 <= c.train.micro_batch <= MAX_BATCH, "train.micro_batch", f"must be in [1, {MAX_BATCH}]")
    need(c.train.global_batch <= MAX_BATCH, "train.global_batch", f"must be <= {MAX_BATCH}")
    need(0.0 <= c.train.guidance <= MAX_GUIDANCE, "train.guidance", f"must be in [0, {MAX_GUIDANCE:g}]")
    need(c.train.global_batch >= c.train.micro_batch, "train.global_batch", "must be >= train.micro_batch")
    need(
        c.train.global_batch % c.train.micro_batch == 0,
        "train.global_batch",
        f"{c.train.global_batch} is not divisible by train.micro_batch {c.train.micro_batch}",
    )
    need(c.train.max_grad_norm > 0, "train.max_grad_norm", "must be > 0")
    need(0 <= c.train.seed < 2**63, "train.seed", "must be in [0, 2**63)")
    need(0.0 <= c.train.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1)")
    need(all(0.0 <= b < 1.0 for b in c.optim.betas), "optim.betas", "must lie in [0, 1)")
    need(
        0 <= c.optim.warmup_steps <= MAX_STEPS and 0 <= c.optim.weight_decay <= 1 and 0 < c.optim.eps < 1,
        "optim",
        f"warmup_steps must be in [0, {MAX_STEPS}], weight_decay in [0, 1] and eps in (0, 1)",
    )
    need(1 <= c.checkpoint.every <= MAX_STEPS, "checkpoint.every", f"must be in [1, {MAX_STEPS}]")
    need(1 <= c.checkpoint.keep <= 1000, "checkpoint.keep", "must be in [1, 1000]")
    need(
        0 <= c.eval.every <= MAX_STEPS and 0 <= c.eval.n_single <= 10**4 and 0 <= c.eval.n_multi <= 10**4 and 1 <= c.eval.steps <= 1000,
        "eval",
        "every, n_single, n_multi must be >= 0 (at most 1e8, 1e4, 1e4) and steps in [1, 1000]",
    )
    need(0.0 <= c.eval.guidance <= MAX_GUIDANCE, "eval.guidance", f"must be in [0, {MAX_GUIDANCE:g}]")
    need(0 <= c.eval.seed < 2**63, "eval.seed", "must be in [0, 2**63)")
    names = [s.name for s in c.stages]
    need(len(set(names)) == len(names), "stages", f"names must be distinct, got {names}")
    for i, s in enumerate(c.stages):
        need(1 <= s.steps <= MAX_STEPS, f"stages[{i}].steps", f"must be in [1, {MAX_STEPS}]")
        need(0 < s.lr <= MAX_LR, f"stages[{i}].lr", f"must be in (0, {MAX_LR:g}]")
        need(1 <= s.min_subjects <= s.max_subjects, f"stages[{i}].min_subjects", "must be >= 1 and <= max_subjects")
