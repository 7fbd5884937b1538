"""Bootstrap confidence intervals of a run's aggregates, and a paired bootstrap between two runs.

Resampling unit: the sample. Each resample draws the bench's samples with replacement and, within
every drawn sample, its seeds with replacement (a two-stage, nested bootstrap: seeds of one sample
are not independent evidence). The generator is seeded, so the same scores give the same interval.

Means over items (every metric whose aggregate is the default mean, and its splits) are resampled
``RESAMPLES`` times, vectorized. Run-level statistics (COCO AP, a plug-in's own aggregate) are
recomputed on ``RUN_LEVEL_RESAMPLES`` resamples (each is a full COCO evaluation). Intervals are the
2.5th and 97.5th percentiles (the percentile method).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from picbench.records import Sample, Score

RESAMPLES = 1000
RUN_LEVEL_RESAMPLES = 200
SEED = 0
LEVEL = 0.95


def resample_weights(groups: Sequence[Sequence[int]], n_items: int, resamples: int, seed: int = SEED) -> np.ndarray:
    """[resamples, n_items] item multiplicities of a nested bootstrap: groups (samples, each the
    indices of its items, i.e. its seeds) drawn with replacement, then items within each drawn group."""
    rng = np.random.default_rng(seed)
    sizes = np.array([len(g) for g in groups])
    n_groups, kmax = len(groups), int(sizes.max()) if len(groups) else 0
    members = np.full((max(n_groups, 1), max(kmax, 1)), -1)
    for g, items in enumerate(groups):
        members[g, : len(items)] = items
    drawn = rng.integers(n_groups, size=(resamples, n_groups))  # which sample fills each slot
    within = np.floor(rng.random((resamples, n_groups, kmax)) * sizes[drawn][..., None]).astype(int)  # seeds drawn inside it
    keep = np.arange(kmax)[None, None, :] < sizes[drawn][..., None]
    picked = members[drawn[..., None], within]
    weights = np.zeros((resamples, n_items))
    rows = np.broadcast_to(np.arange(resamples)[:, None, None], picked.shape)
    np.add.at(weights, (rows[keep], picked[keep]), 1.0)
    return weights


def groups_by_sample(scores: Sequence[Score]) -> list[list[int]]:
    order: dict[str, list[int]] = {}
    for i, sc in enumerate(scores):
        order.setdefault(sc.sample_id, []).append(i)
    return list(order.values())


def _values(scores: Sequence[Score], key: str, mask: Sequence[bool] | None = None) -> np.ndarray:
    out = np.array([sc.metrics.get(key) if sc.metrics.get(key) is not None else np.nan for sc in scores], dtype=float)
    if mask is not None:
        out[~np.asarray(mask, dtype=bool)] = np.nan
    return out


def weighted_means(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of the items that have a value, under each resample's weights (NaN where none has)."""
    have = ~np.isnan(values)
    num = weights[:, have] @ values[have]
    den = weights[:, have].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    kept = draws[~np.isnan(draws)]
    if kept.size == 0:
        return None
    lo, hi = np.quantile(kept, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def mean_intervals(
    scores: Sequence[Score], samples: Mapping[str, Sample], keys: Sequence[str], *, resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, tuple[float, float]]:
    """Interval of the mean of each key over items, and of its ``.single`` / ``.multi`` splits."""
    if not scores:
        return {}
    weights = resample_weights(groups_by_sample(scores), len(scores), resamples, seed)
    split_of = [samples[sc.sample_id].split if sc.sample_id in samples else None for sc in scores]
    out: dict[str, tuple[float, float]] = {}
    for key in keys:
        for suffix, mask in [("", None)] + [(f".{sp}", [s == sp for s in split_of]) for sp in ("single", "multi") if sp in split_of]:
            interval = percentile_interval(weighted_means(weights, _values(scores, key, mask)))
            if interval is not None:
                out[key + suffix] = interval
    return out


def run_level_intervals(
    scores: Sequence[Score],
    statistic: Callable[[Sequence[Score]], Mapping[str, float | None]],
    *,
    resamples: int = RUN_LEVEL_RESAMPLES,
    seed: int = SEED,
) -> dict[str, tuple[float, float]]:
    """Interval of each value ``statistic`` computes from a list of scores, recomputed on resamples."""
    if not scores:
        return {}
    weights = resample_weights(groups_by_sample(scores), len(scores), resamples, seed)
    draws: dict[str, list[float]] = {}
    for row in weights:
        resample = [scores[i] for i, n in enumerate(row.astype(int)) for _ in range(n)]
        for key, value in statistic(resample).items():
            draws.setdefault(key, []).append(np.nan if value is None else float(value))
    return {k: iv for k, v in draws.items() if (iv := percentile_interval(np.array(v))) is not None}


def _split_by_subjects(a: Score, b: Score) -> str | None:
    n = len(a.subjects) or len(b.subjects)
    return None if n == 0 else "single" if n == 1 else "multi"


@dataclass(frozen=True)
class PairedDifference:
    """Run A minus run B on one metric, over the (sample, seed) items both scored."""

    metric: str
    a: float
    b: float
    n_items: int
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def difference(self) -> float:
        return self.a - self.b


def paired_bootstrap(
    a: Sequence[Score], b: Sequence[Score], keys: Sequence[str], *, resamples: int = RESAMPLES, seed: int = SEED
) -> list[PairedDifference]:
    """Per key: the difference of means over the items both runs hold a value for, its interval,
    and a two-sided p-value for "no difference" (the share of resampled differences at least as
    far from the observed one as the observed one is from 0, with the usual +1 correction). A key
    with a ``.single`` / ``.multi`` suffix is restricted to that split (told by the subject count)."""
    by_item_b = {(sc.sample_id, sc.seed): sc for sc in b}
    pairs = [(sa, by_item_b[(sa.sample_id, sa.seed)]) for sa in a if (sa.sample_id, sa.seed) in by_item_b]
    if not pairs:
        return []
    left, right = [p[0] for p in pairs], [p[1] for p in pairs]
    weights = resample_weights(groups_by_sample(left), len(left), resamples, seed)
    out = []
    for key in keys:
        base, _, split = key.partition(".")
        mask = [_split_by_subjects(sa, sb) == split for sa, sb in pairs] if split else None
        va, vb = _values(left, base, mask), _values(right, base, mask)
        both = ~np.isnan(va) & ~np.isnan(vb)
        if not both.any():
            continue
        va, vb = np.where(both, va, np.nan), np.where(both, vb, np.nan)
        observed = float(np.nanmean(va) - np.nanmean(vb))
        draws = weighted_means(weights, va) - weighted_means(weights, vb)
        draws = draws[~np.isnan(draws)]
        lo, hi = percentile_interval(draws) or (math.nan, math.nan)
        extreme = int(np.sum(np.abs(draws - observed) >= abs(observed) - 1e-12))
        out.append(
            PairedDifference(key, float(np.nanmean(va)), float(np.nanmean(vb)), int(both.sum()), lo, hi, (1 + extreme) / (1 + draws.size))
        )
    return out
