"""The PositionIC trainer (a library; `picbench train CONFIG` only calls it).

`config` (typed TOML, checked), `data` (pairs, buckets, a resumable micro-batch order),
`objective` (UNO's flow-matching loss with VAA), `checkpoint` (atomic, exact resume),
`evaluation` (the benchmark during training), `loop` (accelerate: DDP, FSDP, DeepSpeed).
Shipped configs (`CONFIG_DIR`, reference_impl/configs/train/): `paper.toml` (the paper's recipe),
`tiny.toml` (CPU, minutes), and accelerate launch configs under `accelerate/`.
"""

from picbench.reference_impl.training.config import (
    CONFIG_DIR,
    Config,
    ConfigError,
    load_config,
)

__all__ = ["CONFIG_DIR", "Config", "ConfigError", "load_config"]
