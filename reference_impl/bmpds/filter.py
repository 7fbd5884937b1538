"""The three-level filter of BMPDS, on scores from the metric engine.

1. **s_v** (visual similarity): CLIP-I and DINO of each subject's reference against the target
   cropped to the subject's box (the engine's ``clip_i_crop`` and ``dino_crop``). A pair passes
   when *every* subject reaches ``filter.clip_i`` and ``filter.dino``: one badly kept subject spoils
   a multi-subject pair.
2. **s_vlm** (``filter.use_vlm``): the VLM judge (``picbench.metrics.vlm_judge``, Qwen2.5-VL, a
   0-4 grade normalized to 0..1) of each subject's box crop against its reference; every subject
   must reach ``filter.vlm``; an answer that does not parse drops the pair with that reason.
3. **caption ranking**: CLIP-T of the whole target against the caption (the engine's ``clip_t``).
   Choice: CLIP-T rather than a VLM's yes-probability, because it needs no second VLM pass and the
   engine already computes it; its effect is a ranking that rewards captions naming what is
   visible and is blind to counting and relations. Within each stage, the candidates that passed
   levels 1 and 2 are ranked by CLIP-T (ties by unit key) and the top
   ``floor(filter.keep_top * n)`` are kept (at least one when n > 0): stages are ranked apart so
   that one stage's score scale cannot crowd out another's.

Every candidate gets a :class:`Verdict`: kept, or dropped at a level with its reason, or failed
in generation with the stage's reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from picbench.records import Score
from picbench.reference_impl.bmpds.config import FilterCfg

LEVELS = ("generation", "s_v", "s_vlm", "caption_rank")
ENGINE_METRICS = ("clip_i_crop", "dino_crop", "clip_t")
VLM_METRIC = "vlm_judge"


@dataclass(frozen=True)
class Candidate:
    """One unit's filter inputs: per-subject scores (None where the engine could not score), the
    caption score, or the generation failure."""

    key: str
    stage: str
    clip_i: Sequence[float | None] = ()
    dino: Sequence[float | None] = ()
    vlm: Sequence[float | None] = ()
    clip_t: float | None = None
    failure: str | None = None
    score_failures: Sequence[str] = ()


@dataclass(frozen=True)
class Verdict:
    status: str  # "kept", "dropped" or "failed"
    level: str | None  # where it was dropped (one of LEVELS), None when kept
    reason: str

    def to_dict(self) -> dict[str, str | None]:
        return {"status": self.status, "level": self.level, "reason": self.reason}


def candidate_from_score(key: str, stage: str, score: Score, use_vlm: bool) -> Candidate:
    """The filter's view of the engine's Score of a pair (subject order kept)."""
    per = [s.metrics for s in score.subjects]
    return Candidate(
        key,
        stage,
        clip_i=[m.get("clip_i_crop") for m in per],
        dino=[m.get("dino_crop") for m in per],
        vlm=[m.get(VLM_METRIC) for m in per] if use_vlm else (),
        clip_t=score.metrics.get("clip_t"),
        score_failures=tuple(score.failures) + tuple(s.failure for s in score.subjects if s.failure),
    )


def _below(values: Sequence[float | None], threshold: float, name: str) -> str | None:
    """Why the values fail the threshold (a missing value fails), or None when all pass."""
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            return f"{name} of subject {i} could not be computed"
        if v < threshold:
            return f"{name} {v:.4f} of subject {i} < {threshold}"
    return None if values else f"{name}: no subject was scored"


def decide(candidates: Sequence[Candidate], cfg: FilterCfg) -> dict[str, Verdict]:
    """Unit key -> Verdict, by the three levels of the module docstring."""
    verdicts: dict[str, Verdict] = {}
    survivors: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.failure is not None:
            verdicts[c.key] = Verdict("failed", "generation", c.failure)
            continue
        why = _below(c.clip_i, cfg.clip_i, "clip_i") or _below(c.dino, cfg.dino, "dino")
        if why:
            extra = f" ({'; '.join(c.score_failures)})" if c.score_failures else ""
            verdicts[c.key] = Verdict("dropped", "s_v", why + extra)
            continue
        if cfg.use_vlm:
            why = _below(c.vlm, cfg.vlm, "vlm")
            if why:
                extra = f" ({'; '.join(c.score_failures)})" if c.score_failures else ""
                verdicts[c.key] = Verdict("dropped", "s_vlm", why + extra)
                continue
        if c.clip_t is None or not math.isfinite(c.clip_t):
            verdicts[c.key] = Verdict("dropped", "caption_rank", "clip_t could not be computed")
            continue
        survivors.setdefault(c.stage, []).append(c)
    for stage, group in survivors.items():
        ranked = sorted(group, key=lambda c: (-float(c.clip_t), c.key))  # type: ignore[arg-type]
        n_keep = max(1, math.floor(cfg.keep_top * len(ranked) + 1e-9))
        for rank, c in enumerate(ranked, start=1):
            if rank <= n_keep:
                verdicts[c.key] = Verdict("kept", None, f"clip_t {c.clip_t:.4f} ranks {rank} of {len(ranked)} in stage {stage}")
            else:
                verdicts[c.key] = Verdict(
                    "dropped",
                    "caption_rank",
                    f"clip_t {c.clip_t:.4f} ranks {rank} of {len(ranked)} in stage {stage}, below the top {cfg.keep_top:g} ({n_keep} kept)",
                )
    return verdicts
