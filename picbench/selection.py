"""Which samples of a bench a run takes: ``--split``, ``--samples`` and ``--limit``.

``--limit N`` takes an even, seeded share of each split the selection holds, not the first N
samples (a bench usually lists its single-subject samples first, so the first N would never show
an overlapping multi-subject layout). With S splits present, each split gets N // S samples and
the first N % S splits (``single`` before ``multi``) one more; a split with too few samples gives
its remainder to the others. Within a split the samples taken are those with the smallest
sha256 of ``"SEED:SAMPLE_ID"``: deterministic, independent of the file's order, and a sample added
to the bench swaps at most one sample of the selection. The chosen samples keep the bench's order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from picbench.errors import PicbenchError
from picbench.records import Sample

SPLITS = ("single", "multi")
LIMIT_SEED = 0
"""The seed of ``--limit``'s draw (recorded in the run's provenance with the limit)."""


def parse_sample_ids(text: str) -> tuple[str, ...]:
    """``ID,ID,...`` or ``@FILE`` (one id per line; blank lines and lines starting with ``#`` skipped)."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise PicbenchError(f"--samples {text}: cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise PicbenchError(f"--samples {text}: {path} is not UTF-8 text (byte {exc.start})") from None
        ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise PicbenchError(f"--samples {text[:100]!r} names no sample id")
    return tuple(dict.fromkeys(ids))


def select_samples(
    samples: Sequence[Sample],
    *,
    bench: str,
    split: str | None = None,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = LIMIT_SEED,
) -> list[Sample]:
    """The samples a run takes, in bench order; raises, naming what is wrong, on an unknown split,
    unknown ids (all of them listed, nothing is run), a limit below 1 or an empty selection."""
    if split is not None and split not in SPLITS:
        raise PicbenchError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise PicbenchError(f"--limit must be at least 1, got {limit}")
    chosen = list(samples)
    if ids is not None:
        known = {s.id for s in samples}
        unknown = [i for i in ids if i not in known]
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:20]) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
            raise PicbenchError(f"--samples: bench {bench} has no sample {shown}; nothing was run")
        wanted = set(ids)
        chosen = [s for s in chosen if s.id in wanted]
    if split is not None:
        chosen = [s for s in chosen if s.split == split]
    if limit is not None:
        chosen = even_share(chosen, limit, seed)
    if not chosen:
        what = " and ".join(
            part for part in (f"--split {split}" if split else "", f"--samples ({len(ids)} id(s))" if ids is not None else "") if part
        )
        raise PicbenchError(f"bench {bench}: the selection {what or '(the whole bench)'} holds no sample; nothing was run")
    return chosen


def even_share(samples: Sequence[Sample], limit: int, seed: int = LIMIT_SEED) -> list[Sample]:
    """At most ``limit`` samples, shared evenly over the splits present (see the module docstring)."""
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.split, []).append(sample)
    order = [s for s in SPLITS if s in groups] + sorted(s for s in groups if s not in SPLITS)
    quota = dict.fromkeys(order, 0)
    left = min(limit, len(samples))
    while left:  # one sample per split in turn, skipping the exhausted: N // S each, the first N % S one more
        for name in order:
            if left and quota[name] < len(groups[name]):
                quota[name] += 1
                left -= 1
    keep = {id(s) for name in order for s in sorted(groups[name], key=lambda s: _rank(seed, s.id))[: quota[name]]}
    return [s for s in samples if id(s) in keep]


def _rank(seed: int, sample_id: str) -> str:
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()
