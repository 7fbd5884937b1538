"""A BMPDS build: plan every unit from the config's seed, run the stages through the store (a
finished unit is never run again), score the pairs with the metric engine, filter, and write the
pair set.

The build folder is the pair set (``picbench.pairs``): ``pairs.jsonl`` (the kept pairs, each with
its scores, verdict and provenance in ``meta["bmpds"]``: stage, unit, seeds, source subjects or
units, models and their weights' sha256), ``candidates.jsonl`` (every unit: kept, dropped at a
level with its reason, or failed with its reason), ``images/`` and ``store.sqlite``. Units draw
their random choices from their own key, so a unit's pair does not depend on the order, the shard
or the run that computes it: an interrupted build, rerun, ends with the same files as an
uninterrupted one.

Sharding follows ``picbench run`` (``picbench/runner.py``, ``_resolve_shard``): under ``torchrun``
or ``accelerate launch`` (``WORLD_SIZE`` > 1) each rank takes every ``world``-th unit of each stage
into the one store, the ranks wait for each other between stages (the forward stage reads the
single stage's cut-outs) and rank 0 filters and writes.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from picbench.atomic import atomic_write, remove_stale_tmp
from picbench.benches.dreambench import PROMPTS_FILE, parse_prompts_and_classes, single_references
from picbench.benches.msbench import read_spec, subject_files
from picbench.errors import ImageError, PicbenchError
from picbench.layouts import noun_phrase, template_contexts
from picbench.locks import FolderLock
from picbench.pairs import copy_into, write_pairs
from picbench.pairs.stats import CANDIDATES_FILE
from picbench.records import PAIRS_KIND, Bench, Sample, Subject, canonical_json
from picbench.reference_impl.bmpds.config import BmpdsConfig
from picbench.reference_impl.bmpds.filter import ENGINE_METRICS, VLM_METRIC, Candidate, Verdict, candidate_from_score, decide
from picbench.reference_impl.bmpds.roles import (
    HUB_IDS,
    CaptionWriter,
    Outpainter,
    Renderer,
    Segmenter,
    folder_hash,
    load_detector,
    model_folder,
)
from picbench.reference_impl.bmpds.stages import (
    STAGES,
    StageContext,
    SubjectSource,
    Unit,
    UnitFailure,
    plan_backward,
    plan_forward,
    run_backward,
    run_forward,
    run_single,
    unit_key,
)
from picbench.reference_impl.bmpds.store import BmpdsStore, UnitRecord

VERSION = "1"
_STAGE_ROLES = {
    "single": ("subject", "detector", "segmenter", "outpainter"),
    "forward": ("outpainter",),
    "backward": ("caption_lm", "renderer", "detector", "subject"),
}


def subject_pool(data_root: Path, sources: tuple[str, ...]) -> list[SubjectSource]:
    """The real subjects a build draws from: DreamBench's 30 (the reference of UNO's list,
    contexts from their own templates) and MS-Bench's living and object subjects whose image
    exists (contexts from DreamBench's object templates)."""
    spec = parse_prompts_and_classes(data_root / PROMPTS_FILE)
    pool: list[SubjectSource] = []
    if "dreambench" in sources:
        refs = single_references(data_root)
        pool += [
            SubjectSource(n, spec.classes[n], refs[n], "dreambench", tuple(template_contexts(spec.templates_for(n))))
            for n in sorted(spec.classes)
        ]
    if "msbench" in sources:
        ms = read_spec(data_root)
        types, paths, missing = subject_files(data_root, ms)
        contexts = tuple(template_contexts(spec.object_templates))
        pool += [
            SubjectSource(f"msbench-{n}", ms["subject_classes"][n], paths[n], "msbench", contexts)
            for n in sorted(types)
            if types[n] in ("living", "object") and n not in missing
        ]
    return pool


@dataclass
class Roles:
    """Every model of the build, each loaded on first use (a resumed build with nothing left to
    do loads none); ``provenance(stage)`` names the models a stage used and their weights' hashes."""

    config: BmpdsConfig
    device: str
    out: Path
    _built: dict[str, Any] = field(default_factory=dict)
    _hashes: dict[str, str] = field(default_factory=dict)

    def _folder(self, role: str) -> Path:
        folder = model_folder(role, self.config.models, self.config.weights, self.config.weights_dir or None)
        self._hashes.setdefault(role, folder_hash(folder))
        return folder

    def check_available(self, stages: list[str]) -> None:
        """Find every model folder the stages need before any unit runs, so that missing weights
        fail at once with the model's name, not hours into a build."""
        for stage in stages:
            for role in _STAGE_ROLES[stage]:
                if role in HUB_IDS and (role != "caption_lm" or self.config.roles.caption_lm):
                    model_folder(role, self.config.models, self.config.weights, self.config.weights_dir or None)

    def release(self, keep: set[str]) -> None:
        """Drop every built model whose role is not in ``keep`` (the later stages' and the
        filter's models would not fit one GPU beside the earlier stages')."""
        for role in [r for r in self._built if r not in keep]:
            del self._built[role]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _get(self, role: str, build: Callable[[], Any]) -> Any:
        if role not in self._built:
            self._built[role] = build()
        return self._built[role]

    @property
    def segmenter(self) -> Segmenter:
        return self._get("segmenter", lambda: Segmenter(self._folder("segmenter"), self.device))

    @property
    def outpainter(self) -> Outpainter:
        m = self.config.roles
        return self._get(
            "outpainter",
            lambda: Outpainter(
                self._folder("outpainter"), self.device, steps=m.fill_steps, guidance=m.fill_guidance, max_sequence_length=self._max_len()
            ),
        )

    @property
    def renderer(self) -> Renderer:
        m = self.config.roles
        return self._get(
            "renderer",
            lambda: Renderer(
                self._folder("renderer"), self.device, steps=m.steps, guidance=m.render_guidance, max_sequence_length=self._max_len()
            ),
        )

    @property
    def captioner(self) -> CaptionWriter:
        use = self.config.roles.caption_lm
        return self._get("caption_lm", lambda: CaptionWriter(self._folder("caption_lm") if use else None, self.device))

    @property
    def detector(self) -> Any:
        m = self.config.roles

        def build() -> Any:
            det = load_detector(
                m.detector, self.config.models, self.config.weights, self.device, m.detector_threshold, self.config.weights_dir or None
            )
            self._hashes["detector"] = getattr(det, "weights_sha256", det.model_id)
            return det

        return self._get("detector", build)

    @property
    def subject_method(self) -> Any:
        from picbench.methods import METHODS

        m = self.config.roles
        return self._get(
            "subject",
            lambda: METHODS.get(m.subject_method)(
                models=self.config.models, device=self.device, params=dict(m.subject_params), weights_dir=self.config.weights_dir or None
            ),
        )

    def render_subject(self, reference: str, subject: SubjectSource, seed: int) -> Image.Image:
        """The subject model's picture of a subject from one reference (a path in the build folder)."""
        size = self.config.size
        sample = Sample(
            f"render-{subject.name}",
            f"a photo of {noun_phrase(subject.class_word)}",
            size,
            size,
            "single",
            (Subject(subject.name, subject.class_word, (reference,)),),
        )
        return self.subject_method.generate([sample], seed, self.out)[0].convert("RGB")

    def _max_len(self) -> int:
        return 16 if self.config.models == "tiny" else self.config.roles.max_sequence_length

    def provenance(self, stage: str) -> dict[str, Any]:
        prov: dict[str, Any] = {"models": self.config.models}
        for role in _STAGE_ROLES[stage]:
            if role == "subject":
                method = self.subject_method
                prov["subject"] = {"method": method.name, "version": method.version, "params": method.cache_params()}
            elif role == "caption_lm" and not self.config.roles.caption_lm:
                prov["caption_lm"] = None
            else:
                getattr(self, {"caption_lm": "captioner"}.get(role, role))
                prov[role] = {"weights_sha256": self._hashes.get(role)}
        return prov


@dataclass
class BuildOutcome:
    out: Path
    part: str
    ran: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, Verdict] | None = None
    pairs: Bench | None = None


def plan(config: BmpdsConfig) -> dict[str, list[Unit]]:
    fingerprint = config.fingerprint()
    counts = {"single": config.stages.single, "forward": config.stages.forward, "backward": config.stages.backward}
    return {stage: [Unit(stage, i, unit_key(stage, i, fingerprint)) for i in range(counts[stage])] for stage in STAGES}


def _ranks(device: str) -> tuple[int, int, Any]:
    """(rank, world, accelerate state) as ``picbench run`` resolves them; (0, 1, None) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu", timeout=timedelta(days=2))
    return state.process_index, state.num_processes, state


def build(
    config: BmpdsConfig, out: str | Path, data_root: str | Path, *, on_unit: Callable[[str, int, int], None] | None = None
) -> BuildOutcome:
    """Run (or resume) the build into ``out``; see the module docstring. ``on_unit(stage, done,
    total)`` reports progress of this rank's units."""
    out, data_root = Path(out), Path(data_root)
    rank, world, state = _ranks(config.device)
    device = f"cuda:{state.local_process_index}" if state is not None and config.device == "cuda" else config.device
    units = plan(config)
    pool = subject_pool(data_root, config.sources.subjects)
    outcome = BuildOutcome(out, f"{rank}/{world}")
    lock = FolderLock(
        out,
        name=f".lock-{rank}of{world}",
        verb="picbench data build bmpds",
        what=f"part {rank}/{world}",
        remedy="Wait for that build to finish (then rerun to resume), or choose another --out",
    )
    with lock, BmpdsStore(out) as store:
        remove_stale_tmp(out, recursive=True)  # what a killed build left half-written, in any folder below
        roles = Roles(config, device, out)
        smoke = config.models == "tiny"

        def copy_source(rel: str) -> str:
            """A source image brought into the build folder at its data-root path (the pair set is its own root)."""
            copy_into(out, data_root, rel)
            return rel

        ctx = StageContext(
            out,
            data_root,
            roles,
            config.size,
            save_image=lambda image, rel: store.save_image(image, rel, smoke=smoke),
            copy_source=copy_source,
        )
        finished = store.get_units(u.key for stage in STAGES for u in units[stage][rank::world])
        roles.check_available([stage for stage in STAGES if any(u.key not in finished for u in units[stage][rank::world])])
        for stage in STAGES:
            mine = units[stage][rank::world]
            done = store.get_units(u.key for u in mine)
            outcome.reused[stage], outcome.ran[stage] = len(done), 0
            if on_unit is not None:
                on_unit(stage, len(done), len(mine))
            for unit in mine:
                if unit.key in done:
                    continue
                store.put_unit(_run_unit(unit, stage, units, pool, store, ctx, config.seed))
                outcome.ran[stage] += 1
                if on_unit is not None:
                    on_unit(stage, len(done) + outcome.ran[stage], len(mine))
            later = STAGES[STAGES.index(stage) + 1 :]
            roles.release({role for s in later if units[s] for role in _STAGE_ROLES[s]})
            if state is not None:
                state.wait_for_everyone()
        scorer = _score(store, units, config, device, rank, world, out)
        if state is not None:
            state.wait_for_everyone()
        if rank == 0:
            outcome.verdicts, outcome.pairs = _finish(store, units, config, scorer, out)
            for stage in STAGES:
                outcome.failed[stage] = sum(1 for u in units[stage] if outcome.verdicts[u.key].status == "failed")
    if state is not None:
        state.destroy_process_group()
    return outcome


def _run_unit(
    unit: Unit, stage: str, units: dict[str, list[Unit]], pool: list[SubjectSource], store: BmpdsStore, ctx: StageContext, seed: int
) -> UnitRecord:
    try:
        if stage == "single":
            sample, extra = run_single(unit, _single_subject(unit, pool, seed), ctx)
        elif stage == "forward":
            rng = unit.rng()
            indices, overlap = plan_forward(rng, len(units["single"]))
            sources = store.get_units(units["single"][i].key for i in indices)
            chosen = [sources.get(units["single"][i].key) for i in indices]
            failed = [units["single"][i].name for i, r in zip(indices, chosen) if r is None or r.sample is None]
            if failed:
                raise UnitFailure(f"single-stage source(s) {', '.join(failed)} gave no pair")
            sample, extra = run_forward(
                unit, rng, [(r.sample, r.extra) for r in chosen if r is not None and r.sample is not None], overlap, ctx
            )
        else:
            rng = unit.rng()
            sample, extra = run_backward(unit, rng, plan_backward(rng, pool), ctx)
    except (UnitFailure, ImageError) as exc:
        return UnitRecord(unit.key, stage, unit.name, None, {}, str(exc))
    return UnitRecord(unit.key, stage, unit.name, sample, extra, None)


def _single_subject(unit: Unit, pool: list[SubjectSource], seed: int) -> SubjectSource:
    """The subjects in a reshuffled cycle (as positionic-open's singles): unit i takes place
    i mod n of cycle i // n, each cycle shuffled by the config's seed, so every subject is used
    before any repeats."""
    cycle, position = divmod(unit.index, len(pool))
    order = random.Random(f"bmpds-cycle:{seed}:{cycle}").sample(range(len(pool)), len(pool))
    return pool[order[position]]


def _engine_metrics(config: BmpdsConfig) -> list[str]:
    return [*ENGINE_METRICS, *([VLM_METRIC] if config.filter.use_vlm else [])]


def _score(store: BmpdsStore, units: dict[str, list[Unit]], config: BmpdsConfig, device: str, rank: int, world: int, out: Path) -> str:
    """Score this rank's pairs the store has no score for; the scorer key is the engine's fingerprint."""
    from picbench.metrics.decoding import ScoreItem
    from picbench.metrics.engine import MetricEngine

    engine = MetricEngine(
        models=config.models,
        device=device,
        metrics=_engine_metrics(config),
        detector=None,
        weights={k: v for k, v in config.weights.items() if k in ("clip", "dino", VLM_METRIC)},
        weights_dir=config.weights_dir or None,
    )
    scorer = hashlib.sha256(canonical_json({"engine": engine.fingerprint(), "metrics": _engine_metrics(config)}).encode()).hexdigest()
    mine = [u for stage in STAGES for u in units[stage]][rank::world]
    records = store.get_units(u.key for u in mine)
    have = store.get_scores(scorer, records)
    todo = [r for r in records.values() if r.sample is not None and r.key not in have]
    items = [ScoreItem(r.sample, 0, out / str(r.sample.target)) for r in todo]  # type: ignore[union-attr]
    for record, score in zip(todo, engine.score(items, out)):
        store.put_score(record.key, scorer, score)
    return scorer


def _finish(
    store: BmpdsStore, units: dict[str, list[Unit]], config: BmpdsConfig, scorer: str, out: Path
) -> tuple[dict[str, Verdict], Bench]:
    """Filter every unit and write candidates.jsonl and pairs.jsonl (rank 0, after every rank scored)."""
    every = [u for stage in STAGES for u in units[stage]]
    records = store.get_units(u.key for u in every)
    missing = [u.name for u in every if u.key not in records]
    if missing:
        raise PicbenchError(
            f"the store lacks units {missing[:5]}{'...' if len(missing) > 5 else ''}: a rank did not finish; rerun the build"
        )
    scores = store.get_scores(scorer, records)
    candidates: list[Candidate] = []
    for u in every:
        r = records[u.key]
        if r.sample is None:
            candidates.append(Candidate(u.key, u.stage, failure=r.failure))
        else:
            candidates.append(candidate_from_score(u.key, u.stage, scores[u.key], config.filter.use_vlm))
    verdicts = decide(candidates, config.filter)
    kept: list[Sample] = []
    with atomic_write(out / CANDIDATES_FILE) as fh:
        for u, c in zip(every, candidates):
            r, v = records[u.key], verdicts[u.key]
            scored = _scores_of(c)
            fh.write(
                canonical_json(
                    {
                        "unit": u.name,
                        "stage": u.stage,
                        "key": u.key,
                        **v.to_dict(),
                        "scores": scored,
                        "target": r.sample.target if r.sample else None,
                    }
                )
                + "\n"
            )
            if v.status == "kept" and r.sample is not None:
                bmpds = {**r.sample.meta.get("bmpds", {}), "scores": scored, "filter": v.to_dict()}
                kept.append(replace(r.sample, meta={**r.sample.meta, "bmpds": bmpds}))
    pairs = Bench(
        config.name,
        VERSION,
        tuple(kept),
        out,
        kind=PAIRS_KIND,
        description=(
            f"BMPDS build (seed {config.seed}, models {config.models}): {len(kept)} of {len(every)} candidates kept by the "
            f"three-level filter (keep_top {config.filter.keep_top:g}); see candidates.jsonl for the rest."
        ),
    )
    return verdicts, write_pairs(pairs, out)


def _scores_of(c: Candidate) -> dict[str, Any]:
    if c.failure is not None:
        return {}
    scored: dict[str, Any] = {"clip_i": list(c.clip_i), "dino": list(c.dino), "clip_t": c.clip_t}
    if c.vlm:
        scored["vlm"] = list(c.vlm)
    return scored
