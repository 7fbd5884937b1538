"""The one vocabulary every layer speaks: Subject, Sample, Bench, Generation, Score.

Records are plain frozen dataclasses with ``to_dict``/``from_dict``; ``from_dict`` validates and
raises :class:`BenchFormatError` naming the sample and field, so no layer needs its own format.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

from picbench.errors import BenchFormatError

SCHEMA_VERSION = 1
SAMPLE_SCHEMA = f"picbench/sample@{SCHEMA_VERSION}"
BENCH_SCHEMA = f"picbench/bench@{SCHEMA_VERSION}"

Split = Literal["single", "multi"]
BoxXYXY = tuple[float, float, float, float]

SUBJECT_FIELDS = {"name", "class_word", "references", "eval_images", "box", "depth"}
SAMPLE_FIELDS = {"schema", "id", "prompt", "width", "height", "split", "subjects", "meta", "target"}
# A bench file's header ``kind``: a benchmark, or a set of training pairs (samples with a target image).
BENCH_KIND = "bench"
PAIRS_KIND = "pairs"
KINDS = (BENCH_KIND, PAIRS_KIND)


def check_box(box: Any, *, sample_id: str | None = None, field_name: str = "box") -> BoxXYXY:
    """A target box is normalized xyxy in [0, 1] with x0 < x1 and y0 < y1; anything else is an error."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise BenchFormatError(f"box must be 4 numbers [x0, y0, x1, y1], got {box!r}", sample_id=sample_id, field=field_name)
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise BenchFormatError(f"box has a non-numeric value: {box!r}", sample_id=sample_id, field=field_name) from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise BenchFormatError(f"box has NaN or infinite values: {box!r}", sample_id=sample_id, field=field_name)
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise BenchFormatError(f"box {box!r} lies outside [0, 1] (boxes are normalized xyxy)", sample_id=sample_id, field=field_name)
    if not (x0 < x1 and y0 < y1):
        raise BenchFormatError(f"box {box!r} is empty or inverted (need x0 < x1 and y0 < y1)", sample_id=sample_id, field=field_name)
    return (x0, y0, x1, y1)


@dataclass(frozen=True)
class Subject:
    """One subject of a sample.

    ``references`` are what a method is given; ``eval_images`` are what identity is scored against
    (DreamBooth's protocol: all real images of the subject). Paths are relative to the data root.
    ``depth`` 0 is front-most.
    """

    name: str
    class_word: str
    references: tuple[str, ...]
    eval_images: tuple[str, ...] = ()
    box: BoxXYXY | None = None
    depth: int | None = None

    def __post_init__(self) -> None:
        if not self.eval_images:
            object.__setattr__(self, "eval_images", tuple(self.references))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["references"], d["eval_images"] = list(self.references), list(self.eval_images)
        d["box"] = list(self.box) if self.box is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, sample_id: str | None = None, index: int = 0) -> "Subject":
        where = f"subjects[{index}]"
        if not isinstance(d, Mapping):
            raise BenchFormatError(f"subject must be an object, got {type(d).__name__}", sample_id=sample_id, field=where)
        unknown = set(d) - SUBJECT_FIELDS
        if unknown:
            raise BenchFormatError(f"unknown field(s) {sorted(unknown)}", sample_id=sample_id, field=f"{where}.{sorted(unknown)[0]}")
        for key in ("name", "class_word"):
            if not isinstance(d.get(key), str) or not d[key].strip():
                raise BenchFormatError(f"missing or empty {key}", sample_id=sample_id, field=f"{where}.{key}")
        refs = d.get("references")
        if not isinstance(refs, (list, tuple)) or not refs or not all(isinstance(r, str) and r for r in refs):
            raise BenchFormatError("references must be a non-empty list of paths", sample_id=sample_id, field=f"{where}.references")
        evals = d.get("eval_images") or ()
        if not isinstance(evals, (list, tuple)) or not all(isinstance(r, str) and r for r in evals):
            raise BenchFormatError("eval_images must be a list of paths", sample_id=sample_id, field=f"{where}.eval_images")
        box = d.get("box")
        if box is not None:
            box = check_box(box, sample_id=sample_id, field_name=f"{where}.box")
        depth = d.get("depth")
        if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 0):
            raise BenchFormatError(f"depth must be a non-negative integer, got {depth!r}", sample_id=sample_id, field=f"{where}.depth")
        return cls(d["name"], d["class_word"], tuple(refs), tuple(evals), box, depth)


@dataclass(frozen=True)
class Sample:
    """One benchmark item: prompt, output size, and its subjects (with boxes where positioned).

    ``target`` is set only in training pairs (``picbench.pairs``): the path of the image in which
    the subjects sit in their boxes. Benches leave it None, and then it is not written at all."""

    id: str
    prompt: str
    width: int
    height: int
    split: Split
    subjects: tuple[Subject, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)
    target: str | None = None

    @property
    def has_layout(self) -> bool:
        return all(s.box is not None for s in self.subjects)

    def with_fallback_layout(self) -> "Sample":
        """This sample, or, where some subject has no box (DreamBench), a copy in which every
        subject gets picbench's fallback layout: one equal-width, full-height column per subject,
        left to right, depth by list order (0 in front). It lets box-conditioned methods run on
        layout-free benches; scoring still uses the bench's own sample, so no box metric is
        computed against these invented boxes."""
        if self.has_layout:
            return self
        n = len(self.subjects)
        subjects = tuple(
            replace(sub, box=(i / n, 0.0, (i + 1) / n, 1.0), depth=i) for i, sub in enumerate(self.subjects)
        )
        return replace(self, subjects=subjects, meta={**self.meta, "layout": "fallback-columns"})

    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema": SAMPLE_SCHEMA,
            "id": self.id,
            "prompt": self.prompt,
            "width": self.width,
            "height": self.height,
            "split": self.split,
            "subjects": [s.to_dict() for s in self.subjects],
            "meta": dict(self.meta),
        }
        if self.target is not None:
            d["target"] = self.target
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Sample":
        if not isinstance(d, Mapping):
            raise BenchFormatError(f"sample must be a JSON object, got {type(d).__name__}")
        sid = d.get("id")
        if not isinstance(sid, str) or not sid:
            raise BenchFormatError("missing or empty id", field="id")
        schema = d.get("schema", SAMPLE_SCHEMA)
        if schema != SAMPLE_SCHEMA:
            raise BenchFormatError(f"unsupported schema {schema!r} (this picbench reads {SAMPLE_SCHEMA})", sample_id=sid, field="schema")
        unknown = set(d) - SAMPLE_FIELDS
        if unknown:
            raise BenchFormatError(f"unknown field(s) {sorted(unknown)}", sample_id=sid, field=sorted(unknown)[0])
        prompt = d.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BenchFormatError("missing or empty prompt", sample_id=sid, field="prompt")
        for key in ("width", "height"):
            v = d.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise BenchFormatError(f"{key} must be a positive integer, got {v!r}", sample_id=sid, field=key)
        split = d.get("split")
        if split not in ("single", "multi"):
            raise BenchFormatError(f"split must be 'single' or 'multi', got {split!r}", sample_id=sid, field="split")
        subjects = d.get("subjects")
        if not isinstance(subjects, (list, tuple)) or not subjects:
            raise BenchFormatError("subjects must be a non-empty list", sample_id=sid, field="subjects")
        subs = tuple(Subject.from_dict(s, sample_id=sid, index=i) for i, s in enumerate(subjects))
        if split == "single" and len(subs) != 1:
            raise BenchFormatError(f"split 'single' needs exactly one subject, got {len(subs)}", sample_id=sid, field="subjects")
        if split == "multi" and len(subs) < 2:
            raise BenchFormatError("split 'multi' needs at least two subjects", sample_id=sid, field="subjects")
        depths = [s.depth for s in subs if s.depth is not None]
        if len(depths) != len(set(depths)):
            raise BenchFormatError(f"depth ranks repeat: {depths}", sample_id=sid, field="subjects.depth")
        meta = d.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise BenchFormatError("meta must be an object", sample_id=sid, field="meta")
        target = d.get("target")
        if target is not None and (not isinstance(target, str) or not target):
            raise BenchFormatError(f"target must be a non-empty image path, got {target!r}", sample_id=sid, field="target")
        return cls(sid, prompt, d["width"], d["height"], split, subs, dict(meta), target)


@dataclass(frozen=True)
class Bench:
    """A named, versioned list of Samples over a data root. ``content_hash`` covers the spec and
    every image's bytes and goes into every result computed on the bench."""

    name: str
    version: str
    samples: tuple[Sample, ...]
    data_root: Path
    description: str = ""
    reconstruction: bool = False
    kind: str = BENCH_KIND

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, sample_id: str) -> Sample:
        for s in self.samples:
            if s.id == sample_id:
                return s
        raise KeyError(f"bench {self.name} has no sample {sample_id!r}")

    def header(self) -> dict[str, Any]:
        """The header line; ``kind`` only for pair sets, so bench files keep their bytes."""
        header = {
            "schema": BENCH_SCHEMA,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "reconstruction": self.reconstruction,
        }
        if self.kind != BENCH_KIND:
            header["kind"] = self.kind
        return header

    @classmethod
    def from_header(cls, header: Mapping[str, Any], samples: Sequence[Sample], data_root: str | Path) -> "Bench":
        """The Bench a header line (already checked for name and version) describes."""
        kind = header.get("kind", BENCH_KIND)
        if kind not in KINDS:
            raise BenchFormatError(f"header kind must be one of {list(KINDS)}, got {kind!r}", field="kind")
        return cls(
            name=header["name"],
            version=header["version"],
            samples=tuple(samples),
            data_root=Path(data_root),
            description=header.get("description", ""),
            reconstruction=bool(header.get("reconstruction", False)),
            kind=kind,
        )

    def image_paths(self) -> list[str]:
        """Every distinct relative image path the bench uses (pairs: targets too), sorted."""
        paths = {p for s in self.samples for sub in s.subjects for p in (*sub.references, *sub.eval_images)}
        paths.update(s.target for s in self.samples if s.target is not None)
        return sorted(paths)

    def spec_hash(self) -> str:
        h = hashlib.sha256()
        h.update(canonical_json(self.header()).encode())
        for s in self.samples:
            h.update(canonical_json(s.to_dict()).encode())
        return h.hexdigest()

    def content_hash(self, *, missing_ok: bool = True) -> str:
        """sha256 over the spec and the bytes of every image (a missing image hashes as its name
        plus 'missing', so the hash still changes when it appears)."""
        from picbench.paths import resolve_in_root

        h = hashlib.sha256(self.spec_hash().encode())
        for rel in self.image_paths():
            h.update(rel.encode())
            path = resolve_in_root(self.data_root, rel)
            if path.is_file():
                h.update(file_sha256(path).encode())
            elif missing_ok:
                h.update(b"missing")
            else:
                raise FileNotFoundError(path)
        return h.hexdigest()

    def with_samples(self, samples: Sequence[Sample]) -> "Bench":
        return replace(self, samples=tuple(samples))


@dataclass(frozen=True)
class Generation:
    """(method, version, params, sample id, seed) -> image. Hashed, that tuple is the cache key."""

    method: str
    method_version: str
    params: Mapping[str, Any]
    sample_id: str
    seed: int
    image_path: str | None = None
    smoke: bool = False
    failure: str | None = None

    @property
    def key(self) -> str:
        return generation_key(self.method, self.method_version, self.params, self.sample_id, self.seed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = dict(self.params)
        d["key"] = self.key
        return d


@dataclass(frozen=True)
class SubjectScore:
    """Every metric of one subject in one generated image, with the detector's parsed box and
    IoU; ``failure`` says why a value is missing."""

    name: str
    metrics: Mapping[str, float | None]
    detected_box: tuple[float, float, float, float] | None = None
    iou: float | None = None
    failure: str | None = None


@dataclass(frozen=True)
class Score:
    """Per sample and seed: metric values, per-subject scores, the detector's raw output and
    parsed detections, and failure reasons."""

    sample_id: str
    seed: int
    metrics: Mapping[str, float | None]
    subjects: tuple[SubjectScore, ...] = ()
    detector_raw: str | None = None
    detections: tuple[Mapping[str, Any], ...] = ()
    failures: tuple[str, ...] = ()
    smoke: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["subjects"] = [asdict(s) for s in self.subjects]
        d["detections"] = [dict(x) for x in self.detections]
        d["failures"] = list(self.failures)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Score":
        subs = tuple(
            SubjectScore(s["name"], dict(s["metrics"]), tuple(s["detected_box"]) if s.get("detected_box") else None, s.get("iou"), s.get("failure"))
            for s in d.get("subjects", ())
        )
        return cls(d["sample_id"], int(d["seed"]), dict(d["metrics"]), subs, d.get("detector_raw"), tuple(d.get("detections", ())), tuple(d.get("failures", ())), bool(d.get("smoke", False)))


def canonical_json(obj: Any) -> str:
    """Deterministic JSON for hashing: sorted keys, no whitespace, NaN refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} in a picbench record")


def generation_key(method: str, version: str, params: Mapping[str, Any], sample_id: str, seed: int) -> str:
    payload = canonical_json({"method": method, "version": version, "params": dict(params), "sample": sample_id, "seed": int(seed)})
    return hashlib.sha256(payload.encode()).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def iter_subjects(samples: Iterable[Sample]) -> Iterable[tuple[Sample, Subject]]:
    for s in samples:
        for sub in s.subjects:
            yield s, sub
