"""``picbench run`` without the terminal: load and validate a bench, generate what the store lacks,
score what is unscored, aggregate, and write the run folder.

Every finished generation and score is committed to the store (OUT/store.sqlite) at once, so a run
killed at any point and started again recomputes nothing that was finished, and ends with the same
results as an uninterrupted run. A sharded run (``--shard i/n``, or ranks of ``torchrun`` /
``accelerate launch``) writes its part into the one store; :func:`merge` (run by rank 0 when the
ranks finish, or by ``picbench merge OUT``) turns the store into results.json and samples.jsonl.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from functools import partial
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from PIL import Image

from picbench import __version__
from picbench.atomic import atomic_write
from picbench.benches import bench_file_record, default_detector, load_bench
from picbench.coverage import Coverage, measure
from picbench.environment import check_device, environment_cause, is_out_of_memory
from picbench.errors import EnvironmentProblem, PicbenchError
from picbench.limits import SEED_LIMIT
from picbench.methods import METHODS, Method
from picbench.methods.base import same_aspect
from picbench.protocols import bench_protocol, label, run_protocols
from picbench.records import (
    Bench,
    Generation,
    Sample,
    Score,
    canonical_json,
    generation_key,
)
from picbench.results import SAMPLES_FILE, RunResult, save_result
from picbench.run_file import write_run_file
from picbench.selection import LIMIT_SEED, select_samples
from picbench.store import RunLock, RunStore

if TYPE_CHECKING:
    from picbench.metrics.engine import MetricEngine

_LIBRARIES = (
    "torch",
    "torchvision",
    "transformers",
    "diffusers",
    "open_clip_torch",
    "timm",
    "peft",
    "accelerate",
    "numpy",
    "pillow",
    "pycocotools",
)
RUN_CONFIG_SCHEMA = 1
FRESH_PIXELS = 2**27  # fresh generations kept in memory for scoring: 128 images of 1024 x 1024 (about 400 MB of RGB)


class BenchRefusedError(PicbenchError):
    """The bench failed validation; nothing was generated."""


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count``: the work items whose position modulo count is index."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(v) for v in text.split("/"))
        except ValueError:
            raise PicbenchError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise PicbenchError(f"--shard {text}: need 0 <= i < n")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


BENCH_DEFAULT = "default"  # RunConfig.detector: the bench's own detector, resolved when the bench is loaded


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on. ``params`` override the method's defaults."""

    method: str
    bench: str
    out: Path
    seeds: tuple[int, ...] = (0,)
    limit: int | None = None  # an even, seeded share of each split (picbench.selection)
    split: str | None = None  # only "single" or only "multi" samples
    samples: tuple[str, ...] | None = None  # only these sample ids
    device: str = "cpu"
    models: Literal["default", "tiny"] = "default"
    shard: Shard | None = None
    data_dir: Path | None = None
    detector: str | None = BENCH_DEFAULT  # the bench's own (benches.default_detector); None: no box metrics
    metrics: tuple[str, ...] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, str] = field(default_factory=dict)
    weights_dir: Path | None = None  # method checkpoints; None: $PICBENCH_WEIGHTS_DIR, then the hub
    batch_size: int = 4
    retry_failed: bool = False
    precision: str = "fp32"  # the encoders' arithmetic: fp32, or bf16 autocast (recorded in the protocol)
    identity_sets: tuple[str, ...] = ("default",)  # --protocols: the first gives the plain metric keys

    @property
    def smoke(self) -> bool:
        return self.models == "tiny"

    def to_record(self) -> dict[str, Any]:
        """The JSON-safe record a shard stores (keys: the field names), from which a merge rebuilds
        the run with :meth:`from_record`; ``out``, ``shard`` and ``retry_failed`` belong to one
        invocation and are not recorded."""
        record: dict[str, Any] = {}
        for f in fields(self):
            if f.name not in _PER_INVOCATION:
                value = getattr(self, f.name)
                if f.name in _PATH_FIELDS:
                    value = str(value) if value is not None else None
                elif f.name in _TUPLE_FIELDS:
                    value = list(value) if value is not None else None
                elif isinstance(value, Mapping):
                    value = dict(value)
                record[f.name] = value
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, out: str | Path, **overrides: Any) -> RunConfig:
        """The configuration :meth:`to_record` wrote (fields a record lacks keep their defaults),
        writing to ``out``, with ``overrides`` (e.g. another device) applied."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in _PER_INVOCATION and f.name in record:
                value = record[f.name]
                if f.name in _PATH_FIELDS:
                    value = Path(value) if value is not None else None
                elif f.name in _TUPLE_FIELDS:
                    value = tuple(value) if value is not None else None
                values[f.name] = value
        return cls(out=Path(out), **{**values, **overrides})

    def run_file_options(self) -> dict[str, Any]:
        """This run as ``picbench run --config`` reads it (:mod:`picbench.run_file`: the CLI's
        option names), without the options of one invocation (``shard``, ``retry_failed``)."""
        return {
            "method": self.method,
            "bench": self.bench,
            "out": str(self.out),
            "seeds": list(self.seeds),
            "limit": self.limit,
            "split": self.split,
            "samples": list(self.samples) if self.samples is not None else None,
            "device": self.device,
            "models": self.models,
            "data_dir": str(self.data_dir) if self.data_dir is not None else None,
            "detector": "none" if self.detector is None else self.detector,
            "protocols": list(self.identity_sets),
            "precision": self.precision,
            "metrics": list(self.metrics) if self.metrics is not None else None,
            "param": dict(self.params),
            "weights": dict(self.weights),
            "weights_dir": str(self.weights_dir) if self.weights_dir is not None else None,
            "batch_size": self.batch_size,
        }


def default_out(method: str, bench: str) -> Path:
    """The run folder of a run given no ``out``: runs/METHOD__BENCH (a bench path's file stem)."""
    return Path("runs") / f"{method}__{Path(bench).stem}"


_PER_INVOCATION = ("out", "shard", "retry_failed")
_PATH_FIELDS = ("data_dir", "weights_dir")
_TUPLE_FIELDS = ("seeds", "metrics", "identity_sets", "samples")


class Progress(Protocol):
    """What the runner reports while it works (the CLI draws rich progress bars from it)."""

    def phase(self, name: str, total: int, done: int) -> None: ...

    def advance(self, name: str, n: int = 1) -> None: ...

    def note(self, message: str) -> None: ...


class SilentProgress:
    def phase(self, name: str, total: int, done: int) -> None:
        pass

    def advance(self, name: str, n: int = 1) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class RunOutcome:
    """What one invocation did; ``result`` is None for a shard whose merge is still to come."""

    out: Path
    result: RunResult | None
    part: str
    items: int = 0
    generated: int = 0
    generation_reused: int = 0
    generation_failures: int = 0
    scored: int = 0
    score_reused: int = 0


@dataclass(frozen=True)
class _Item:
    """One (sample, seed) to generate. ``params`` are the method's cache parameters plus a hash
    of the sample's record, so an edited sample (new box, prompt, reference) is never served a
    stale image from the store."""

    sample: Sample
    seed: int
    params: Mapping[str, Any]
    key: str


class FreshImages(dict):
    """This invocation's generations by item key, kept (up to FRESH_PIXELS in all) so that scoring
    takes them from memory instead of decoding their PNG files again (the pixels are the same)."""

    pixels = 0

    def keep(self, key: str, image: Image.Image) -> None:
        size = image.width * image.height
        if self.pixels + size <= FRESH_PIXELS:
            self[key], self.pixels = image, self.pixels + size


def _work_items(method: Method, cache_params: Mapping[str, Any], samples: list[Sample], seeds: tuple[int, ...]) -> list[_Item]:
    items = []
    for sample in samples:
        params = {**cache_params, "sample_sha256": hashlib.sha256(canonical_json(sample.to_dict()).encode()).hexdigest()}
        for seed in seeds:
            own = {**params, **method.item_params(sample, seed)}
            items.append(_Item(sample, seed, own, generation_key(method.name, method.version, own, sample.id, seed)))
    return items


def run(config: RunConfig, progress: Progress | None = None) -> RunOutcome:
    """Run (or resume) one method on one bench. Raises before generating anything when the bench,
    the method, the device, any model's weights or the output folder is unusable, or when another
    process works on the same part of the same folder (a lock, taken before the bench is read, so
    a second run on the folder is refused at once)."""
    progress = progress or SilentProgress()
    shard, dist_state = _resolve_shard(config)
    device = check_device(_rank_device(config.device, dist_state))
    _check_weight_roles(config.weights)
    bad_seeds = [s for s in config.seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEED_LIMIT]
    if bad_seeds or not config.seeds:
        raise PicbenchError(f"seeds must be integers in [0, 2**63), got {list(config.seeds)[:5]!r}")
    with _locked(config.out, str(shard)):
        bench = load_bench(config.bench, config.data_dir)
        if config.detector == BENCH_DEFAULT:
            config = replace(config, detector=default_detector(bench.name))  # recorded resolved: a merge scores with the same
        samples = _selected(bench, config)
        _refuse_invalid(bench.with_samples(samples), given=config.bench)
        outcome = _run_locked(config, progress, shard, dist_state, device, bench, samples)
    if dist_state is not None:
        dist_state.destroy_process_group()
    return outcome


@contextmanager
def _locked(out: Path, part: str) -> Iterator[RunLock]:
    """Hold the folder's lock for this part. A run refused before writing anything (unknown bench,
    invalid bench, bad selection) leaves no folder behind where there was none."""
    out = Path(out)
    created = not out.exists()
    lock = RunLock(out, part)
    lock.acquire()
    try:
        yield lock
    except BaseException:
        if created and [p.name for p in out.iterdir()] == [lock.path.name]:
            lock.path.unlink()
            out.rmdir()
        raise
    finally:
        lock.release()


def _selected(bench: Bench, config: RunConfig) -> list[Sample]:
    return select_samples(bench.samples, bench=config.bench, split=config.split, ids=config.samples, limit=config.limit)


def _run_locked(
    config: RunConfig, progress: Progress, shard: Shard, dist_state: Any, device: str, bench: Bench, samples: list[Sample]
) -> RunOutcome:
    """Generate, score and (for the whole run or rank 0) finalize, under the folder's lock."""
    method = METHODS.get(config.method)(models=config.models, device=device, params=dict(config.params), weights_dir=config.weights_dir)
    with RunStore(config.out) as store:
        store.remove_stale_tmp()
        engine = _engine(config, device, store)  # resolves every metric model's weights now, before any generation
        cache_params = method.cache_params()
        items = _work_items(method, cache_params, samples, config.seeds)
        mine = items[shard.index :: shard.count]
        run_cfg = _config_record(config, bench, method, cache_params)
        store.put_part(str(shard), run_cfg, "running")
        write_run_file(config.out, config.run_file_options())  # the store took the run: `picbench run --config OUT/run.toml` reruns it
        outcome = RunOutcome(out=Path(config.out), result=None, part=str(shard), items=len(mine))
        fresh = FreshImages()
        _generate(store, method, mine, bench.data_root, config, outcome, progress, fresh)
        uses_references, provenance_method = method.capabilities.references, _method_provenance(method)
        del method
        _free_accelerator_memory()
        scorer = _scorer_key(engine, config)
        _score(store, engine, scorer, mine, bench.data_root, uses_references, outcome, progress, fresh)
        fresh.clear()
        store.put_part(str(shard), {**run_cfg, "scorer_key": scorer, "method_provenance": provenance_method}, "done")
        if dist_state is not None:
            dist_state.wait_for_everyone()
        if shard.count == 1 or (dist_state is not None and dist_state.is_main_process):
            outcome.result = _finalize(store, config, bench, samples, items, engine, scorer, provenance_method, device)
    return outcome


def merge(out: str | Path, *, device: str | None = None) -> RunResult:
    """Turn the store of a sharded run into results.json and samples.jsonl. Every part must have
    finished with the same configuration."""
    out = Path(out)
    if not (out / "store.sqlite").is_file():
        raise PicbenchError(f"{out} holds no store.sqlite: nothing to merge")
    with RunStore(out) as store:
        parts = store.parts()
        by_count: dict[int, dict[int, tuple[dict[str, Any], str]]] = {}
        for part, record in parts.items():
            index, count = (int(v) for v in part.split("/"))
            by_count.setdefault(count, {})[index] = record
        if not by_count:
            raise PicbenchError(f"{out}: the store records no run; run `picbench run ... --out {out}` first")
        complete = [n for n, recs in by_count.items() if all(recs.get(i, ({}, ""))[1] == "done" for i in range(n))]
        if not complete:
            n = max(by_count)
            unfinished = [f"{i}/{n}" for i in range(n) if by_count[n].get(i, ({}, ""))[1] != "done"]
            raise PicbenchError(f"{out}: shard(s) {', '.join(unfinished)} have not finished; run them again (they resume), then merge")
        n = max(complete)
        cfg = by_count[n][0][0]
        differing = [f"{i}/{n}" for i in range(n) if _comparable(by_count[n][i][0]) != _comparable(cfg)]
        if differing:
            raise PicbenchError(f"{out}: shard(s) {', '.join(differing)} ran with another configuration than shard 0/{n}; rerun them")
    config = RunConfig.from_record(cfg, out=out, **({"device": device} if device else {}))
    check_device(config.device)
    bench = load_bench(config.bench, config.data_dir)
    if bench.spec_hash() != cfg["bench_spec_hash"]:
        raise PicbenchError(f"{out}: bench {config.bench} changed since the run (spec hash differs); rerun instead of merging")
    samples = _selected(bench, config)
    method = METHODS.get(config.method)(models=config.models, device="cpu", params=dict(config.params), weights_dir=config.weights_dir)
    items = _work_items(method, cfg["cache_params"], samples, config.seeds)  # builds no network: only the items' keys
    with RunStore(out) as store:
        engine = _engine(config, config.device, store)
        scorer = _scorer_key(engine, config)
        if scorer != cfg["scorer_key"]:
            raise PicbenchError(f"{out}: the metric engine here differs from the one that scored the shards (models or weights changed)")
        return _finalize(store, config, bench, samples, items, engine, scorer, cfg["method_provenance"], config.device)


# -- steps ---------------------------------------------------------------------------------------


def _resolve_shard(config: RunConfig) -> tuple[Shard, Any]:
    """The explicit --shard, else this rank's shard under torchrun / accelerate launch (with the
    accelerate state used to wait for the other ranks), else the whole run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if config.shard is not None:
            raise PicbenchError("--shard cannot be combined with torchrun / accelerate launch: the ranks are the shards")
        from accelerate import PartialState

        state = PartialState(cpu=config.device == "cpu", timeout=timedelta(days=2))
        return Shard(state.process_index, state.num_processes), state
    return config.shard or Shard(0, 1), None


def _rank_device(device: str, dist_state: Any) -> str:
    if dist_state is not None and device == "cuda":
        return f"cuda:{dist_state.local_process_index}"
    return device


def _check_weight_roles(weights: Mapping[str, str]) -> None:
    """``--weights ROLE=DIR`` names a metric model role the engine knows, or the run stops here."""
    from picbench.metrics.weights import METRIC_MODELS

    known = {*METRIC_MODELS.names(), "detector"}
    unknown = sorted(set(weights) - known)
    if unknown:
        raise PicbenchError(f"--weights: unknown role(s) {unknown}; the metric engine's roles are {sorted(known)}")


def _load_up_front(method: Method) -> None:
    """Load the method's networks before the first generation (:meth:`Method.load`, for methods
    that have some), so a missing checkpoint stops the run before anything is generated, not
    after a first batch; a run with nothing left to generate loads nothing."""
    if type(method)._load is not Method._load:
        method.load()


def _refuse_invalid(bench: Bench, given: str | None = None) -> None:
    """Refuse, before any generation, a bench that fails validation; the message names the bench
    as the user gave it (a path stays a path)."""
    from picbench.validate import validate_bench

    report = validate_bench(bench)
    if report.errors:
        listed = "\n".join(f"  - {e.where()}: {e.message}" for e in report.errors[:20])
        more = f"\n  ... and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        raise BenchRefusedError(
            f"bench {given or bench.name} fails validation with {len(report.errors)} error(s); nothing was generated. "
            f"Run `picbench validate {given or bench.name}` for the full report.\n{listed}{more}"
        )


def _generate(
    store: RunStore,
    method: Method,
    items: list[_Item],
    data_root: Path,
    config: RunConfig,
    outcome: RunOutcome,
    progress: Progress,
    fresh: FreshImages,
) -> None:
    """Generate every item the store lacks (or whose image file is gone; failures again only with
    ``retry_failed``), in batches of one seed."""
    done = {k: g for k, g in store.get_generations(i.key for i in items).items() if _finished(store, g, config.retry_failed)}
    pending = [i for i in items if i.key not in done]
    outcome.generation_reused = len(done)
    outcome.generation_failures = sum(1 for g in done.values() if g.failure is not None)
    progress.phase("generate", len(items), outcome.generation_reused)
    record = partial(_record, store, method, outcome=outcome, progress=progress, fresh=fresh)
    by_seed: dict[int, list[_Item]] = {}
    for item in pending:
        reason = method.supports(item.sample)
        if reason is not None:
            record(item, None, f"unsupported: {reason}")
        else:
            by_seed.setdefault(item.seed, []).append(item)
    if by_seed:
        _load_up_front(method)
    for seed, seed_items in by_seed.items():
        for start in range(0, len(seed_items), config.batch_size):
            batch = seed_items[start : start + config.batch_size]
            for item, image, failure in _generate_batch(method, batch, seed, data_root):
                record(item, image, failure)


def _finished(store: RunStore, generation: Generation, retry_failed: bool) -> bool:
    if generation.failure is not None:
        return not retry_failed
    return generation.image_path is not None and (store.out_dir / generation.image_path).is_file()


def _generate_batch(method: Method, batch: list[_Item], seed: int, data_root: Path) -> list[tuple[_Item, Image.Image | None, str | None]]:
    """Generate one batch; when the batch raises, retry its samples one by one so one bad sample
    fails alone. An environment problem (device, missing weights, memory once the batch is one
    sample, disk) is not a sample's outcome: it stops the run and nothing is recorded for it."""
    try:
        outputs = method.generate([i.sample for i in batch], seed, data_root)
    except EnvironmentProblem:
        raise
    except Exception as exc:  # a method's failure on a sample is recorded, not fatal
        cause = environment_cause(exc)
        if len(batch) > 1 and (cause is None or is_out_of_memory(exc)):
            _free_accelerator_memory()
            return [r for item in batch for r in _generate_batch(method, [item], seed, data_root)]
        if cause is not None:
            raise EnvironmentProblem(
                f"generation stopped by {cause} ({type(exc).__name__}: {exc}) at sample {batch[0].sample.id}; this is not "
                "recorded as the sample's outcome. Fix the machine and rerun the same command: finished work is kept"
            ) from exc
        return [(batch[0], None, f"generation raised {type(exc).__name__}: {exc}")]
    if not isinstance(outputs, (list, tuple)) or len(outputs) != len(batch):
        got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
        return [(item, None, f"method returned {got} outputs for a batch of {len(batch)}") for item in batch]
    return [(item, *check_image(output, item.sample, exact_size=method.exact_size)) for item, output in zip(batch, outputs)]


def check_image(output: Any, sample: Sample, *, exact_size: bool = True) -> tuple[Image.Image | None, str | None]:
    """(RGB image, None) for a usable output, else (None, the reason): not an image, NaN or
    infinite values, undecodable, or not the sample's width x height (with ``exact_size=False``:
    not of the sample's aspect ratio)."""
    if not isinstance(output, Image.Image):
        try:
            import numpy as np

            values = np.asarray(output.detach().cpu() if hasattr(output, "detach") else output, dtype=np.float64)
            if values.size and not np.isfinite(values).all():
                return None, "method returned NaN or infinite values instead of an image"
        except (TypeError, ValueError):
            pass
        return None, f"method returned {type(output).__name__}, not a PIL image"
    try:
        output.load()
        image = output.convert("RGB")
    except Exception as exc:  # PIL raises many types for broken pixel data
        return None, f"broken image ({type(exc).__name__}: {exc})"
    if image.size != (sample.width, sample.height) and (exact_size or not same_aspect(image.size, (sample.width, sample.height))):
        return None, f"wrong size {image.width}x{image.height}, expected {sample.width}x{sample.height}" + (
            "" if exact_size else " or the same aspect ratio"
        )
    return image, None


def _record(
    store: RunStore,
    method: Method,
    item: _Item,
    image: Image.Image | None,
    failure: str | None,
    *,
    outcome: RunOutcome,
    progress: Progress,
    fresh: FreshImages,
) -> None:
    """Save the image (atomically), then its record: a record never points at a missing file.
    The image is also kept in ``fresh`` (within FRESH_PIXELS) so scoring need not decode it again."""
    generation = Generation(method.name, method.version, item.params, item.sample.id, item.seed, None, method.smoke, failure)
    if image is not None:
        generation = replace(generation, image_path=store.save_image(image, store.image_name(generation), smoke=method.smoke))
        fresh.keep(item.key, image)
    store.put_generation(generation)
    outcome.generated += 1
    outcome.generation_failures += failure is not None
    if failure is not None:
        progress.note(f"sample {item.sample.id} seed {item.seed}: {failure}")
    progress.advance("generate")


def _engine(config: RunConfig, device: str, store: RunStore) -> MetricEngine:
    from picbench.metrics.cache import EmbeddingCache
    from picbench.metrics.engine import MetricEngine

    return MetricEngine(
        models=config.models,
        device=device,
        metrics=config.metrics,
        detector=config.detector,
        precision=config.precision,
        identity_sets=config.identity_sets,
        weights=dict(config.weights) or None,
        weights_dir=config.weights_dir,
        cache=EmbeddingCache(store.path),
        batch_size=max(1, config.batch_size),
        num_workers=min(4, os.cpu_count() or 1),  # decoding threads: stored images and references decode in parallel
    )


def _scorer_key(engine: MetricEngine, config: RunConfig) -> str:
    """Scores are reused only under the same engine: models, weights, detector, metrics."""
    payload = {"models": config.models, "detector": config.detector, "metrics": config.metrics, "engine": engine.fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _score(
    store: RunStore,
    engine: MetricEngine,
    scorer: str,
    items: list[_Item],
    data_root: Path,
    uses_references: bool,
    outcome: RunOutcome,
    progress: Progress,
    fresh: FreshImages,
) -> None:
    from picbench.metrics.decoding import ScoreItem

    generations = store.get_generations(i.key for i in items)
    scored = store.get_scores(scorer, (i.key for i in items))
    pending = [i for i in items if i.key not in scored and i.key in generations]
    outcome.score_reused = len(items) - len(pending)
    progress.phase("score", len(items), outcome.score_reused)
    score_items = [
        ScoreItem(
            sample=i.sample,
            seed=i.seed,
            uses_references=uses_references,
            failure=generations[i.key].failure,
            image_path=store.out_dir / generations[i.key].image_path if generations[i.key].image_path else None,
            image=fresh.get(i.key),
        )
        for i in pending
    ]
    try:
        for item, score in zip(pending, engine.score(score_items, data_root)):
            store.put_score(item.key, scorer, score)
            outcome.scored += 1
            progress.advance("score")
    except Exception as exc:  # an environment problem while scoring (memory, device) stops the run, unrecorded
        cause = environment_cause(exc)
        if cause is None or isinstance(exc, PicbenchError):
            raise
        raise EnvironmentProblem(
            f"scoring stopped by {cause} ({type(exc).__name__}: {exc}); it is not recorded as a sample's score. "
            "Fix the machine and rerun the same command: finished work is kept"
        ) from exc


def _finalize(
    store: RunStore,
    config: RunConfig,
    bench: Bench,
    samples: list[Sample],
    items: list[_Item],
    engine: MetricEngine,
    scorer: str,
    method_provenance: Mapping[str, Any],
    device: str,
) -> RunResult:
    """Aggregate every item's stored score and write samples.jsonl and results.json (atomically)."""
    generations = store.get_generations(i.key for i in items)
    scores = store.get_scores(scorer, (i.key for i in items))
    missing = [i for i in items if i.key not in scores]
    if missing:
        first = missing[0]
        raise PicbenchError(
            f"{len(missing)} of {len(items)} items have no score yet (first: sample {first.sample.id} seed {first.seed}); "
            "run the unfinished shards again, then merge"
        )
    ordered: list[Score] = [scores[i.key] for i in items]
    aggregate = engine.aggregate(ordered, {s.id: s for s in samples})
    engine_provenance = engine.provenance()
    protocols = run_protocols(
        bench_protocol(bench.name), engine.identity_sets, engine_provenance, engine.detector_name if engine.uses_detector else None
    )
    _write_samples(store.out_dir, items, ordered, generations, protocols[0])
    counts = {k: int(v) for k, v in aggregate.items() if k.startswith("n_") and v is not None}
    counts.update(
        samples=len(samples),
        items=len(items),
        generation_failures=sum(1 for i in items if generations[i.key].failure is not None),
    )
    smoke = config.smoke or bool(engine_provenance.get("smoke"))
    coverage = _coverage(items, ordered, generations)
    result = RunResult(
        method=method_provenance["name"],
        method_version=method_provenance["version"],
        method_params=method_provenance["params"],
        bench=bench.name,
        bench_version=bench.version,
        bench_hash=bench.content_hash(),
        seeds=tuple(config.seeds),
        metrics={k: (float(v) if v is not None else None) for k, v in aggregate.items() if not k.startswith("n_")},
        counts=counts,
        smoke=smoke,
        provenance=_provenance(config, bench, method_provenance, engine_provenance, device, smoke),
        higher_is_better=engine.directions(),
        intervals=engine.intervals(ordered, {s.id: s for s in samples}),
        coverage=coverage,
        protocol=protocols[0],
        extra_protocols=tuple(protocols[1:]),
    )
    save_result(result, store.out_dir)
    return result


def _coverage(items: list[_Item], scores: list[Score], generations: Mapping[str, Generation]) -> Coverage:
    """Expected, scored and failed items, per split (:mod:`picbench.coverage`): an item is scored
    when its image was generated and the engine computed a value from it (an image it could not
    decode has none), failed when its score records any failure (the engine's n_failures)."""
    return measure(
        (
            item.sample.split,
            generations[item.key].failure is None and any(v is not None for v in score.metrics.values()),
            bool(score.failures),
        )
        for item, score in zip(items, scores)
    )


def _write_samples(
    out: Path, items: list[_Item], scores: list[Score], generations: Mapping[str, Generation], protocol: Mapping[str, Any]
) -> None:
    """One line per item: its Score, image, generation key and the protocol its plain metric keys
    were computed under (``protocol``: name and hash, as results.json's)."""
    path = out / SAMPLES_FILE
    try:
        with atomic_write(path) as fh:
            for item, score in zip(items, scores):
                generation = generations[item.key]
                line = {
                    **score.to_dict(),
                    "image": generation.image_path,
                    "image_size": _image_size(out, generation.image_path),
                    "generation_key": item.key,
                    "generation_failure": generation.failure,
                    "protocol": label(protocol),
                }
                fh.write(json.dumps(line, sort_keys=True, allow_nan=False) + "\n")
    except OSError as exc:
        raise PicbenchError(
            f"cannot write {path}: {exc.strerror or exc}; the store keeps every record, rerun `picbench merge {out}`"
        ) from exc


def _image_size(out: Path, image_path: str | None) -> list[int] | None:
    """[width, height] of a stored image (read from its header): a method may keep its own size."""
    if image_path is None:
        return None
    try:
        with Image.open(out / image_path) as image:
            return list(image.size)
    except OSError:
        return None


# -- provenance ----------------------------------------------------------------------------------


def _method_provenance(method: Method) -> dict[str, Any]:
    return {
        "name": method.name,
        "version": method.version,
        "params": method.cache_params(),
        "capabilities": asdict(method.capabilities),
        "checkpoints": dict(method.checkpoints),
    }


def _config_record(config: RunConfig, bench: Bench, method: Method, cache_params: Mapping[str, Any]) -> dict[str, Any]:
    """What a shard stores so that a merge can rebuild the run without the method's models."""
    return {
        "schema": RUN_CONFIG_SCHEMA,
        **config.to_record(),
        "method_name": method.name,
        "method_version": method.version,
        "cache_params": dict(cache_params),
        "bench_spec_hash": bench.spec_hash(),
    }


def _comparable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A shard's configuration minus what may differ between shards of one run."""
    return {k: v for k, v in cfg.items() if k not in ("device", "batch_size", "weights_dir", "method_provenance")}


def _provenance(
    config: RunConfig, bench: Bench, method: Mapping[str, Any], engine: Mapping[str, Any], device: str, smoke: bool
) -> dict[str, Any]:
    return {
        "picbench_version": __version__,
        "git": _git_state(),
        "bench": {
            "name": bench.name,
            "version": bench.version,
            "spec_hash": bench.spec_hash(),
            "reconstruction": bench.reconstruction,
            "limit": config.limit,
            "limit_seed": LIMIT_SEED if config.limit is not None else None,
            "split": config.split,
            "samples": list(config.samples) if config.samples is not None else None,
            "file": bench_file_record(config.bench, config.data_dir),
        },
        "method": dict(method),
        "seeds": list(config.seeds),
        "models": config.models,
        "smoke": smoke,
        "metric_engine": dict(engine),
        "libraries": _library_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _git_state() -> dict[str, Any] | None:
    """The commit of the picbench checkout (None for an install outside git) and whether it is dirty."""
    root = Path(__file__).resolve().parents[1]  # the checkout holding picbench/
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _library_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            found[name] = package_version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _free_accelerator_memory() -> None:
    """Let the metric engine's models have the memory the method's models held."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
