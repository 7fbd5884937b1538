"""BMPDS, the data pipeline that made PositionIC's training set, as composable stages.

``config`` (the TOML build config) -> ``build.plan`` (every unit, seeded) -> ``stages`` (single,
forward, backward: one unit -> one pair or a failure reason) through ``store`` (resumable) ->
``filter`` (s_v, s_vlm, caption ranking; keep the top fraction) -> a pair set (``picbench.pairs``)
that the trainer reads unchanged. ``roles`` loads the pluggable models of its roles from local folders.
``picbench data build bmpds CONFIG`` is the command.
"""

from picbench.reference_impl.bmpds.build import BuildOutcome, build, plan, subject_pool
from picbench.reference_impl.bmpds.config import BmpdsConfig, load_config

__all__ = ["BmpdsConfig", "BuildOutcome", "build", "load_config", "plan", "subject_pool"]
