"""The one vocabulary every layer speaks: Subject, Sample, Bench, Generation, Score.

Records are plain frozen dataclasses with ``to_dict``/``from_dict``. The rules a sample record
must follow are written once, below, as checks that report into a
:class:`~picbench.problems.ProblemSink`: ``from_dict`` raises :class:`~picbench.errors.BenchFormatError` on the
first (naming the sample and field), ``picbench validate`` gathers all of them. A rule appended
to :data:`SAMPLE_RULES` or :data:`SUBJECT_RULES` is enforced by both.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from picbench.errors import ResultFormatError
from picbench.limits import SEED_LIMIT, Limits, current_limits
from picbench.problems import ProblemSink, RaiseFirst

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
MAX_DEPTH_RANK = 2**31 - 1


def check_box(box: Any, *, sample_id: str | None = None, field_name: str = "box") -> BoxXYXY:
    """A target box is normalized xyxy in [0, 1] with x0 < x1 and y0 < y1; anything else is an error."""
    box_rule(box, field_name, RaiseFirst(sample_id=sample_id))
    return tuple(float(v) for v in box)  # type: ignore[return-value]


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
    def from_dict(cls, d: Mapping[str, Any], *, sample_id: str | None = None, index: int = 0) -> Subject:
        check_subject_record(d, f"subjects[{index}]", RaiseFirst(sample_id=sample_id))
        return cls._from_checked(d)

    @classmethod
    def _from_checked(cls, d: Mapping[str, Any]) -> Subject:
        box = d.get("box")
        return cls(
            d["name"],
            d["class_word"],
            tuple(d["references"]),
            tuple(d.get("eval_images") or ()),
            tuple(float(v) for v in box) if box is not None else None,
            d.get("depth"),  # type: ignore[arg-type]
        )


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

    def with_fallback_layout(self) -> Sample:
        """This sample, or, where some subject has no box (DreamBench), a copy in which every
        subject gets picbench's fallback layout: one equal-width, full-height column per subject,
        left to right, depth by list order (0 in front). It lets box-conditioned methods run on
        layout-free benches; scoring still uses the bench's own sample, so no box metric is
        computed against these invented boxes."""
        if self.has_layout:
            return self
        n = len(self.subjects)
        subjects = tuple(replace(sub, box=(i / n, 0.0, (i + 1) / n, 1.0), depth=i) for i, sub in enumerate(self.subjects))
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
    def from_dict(cls, d: Mapping[str, Any], *, file: str | Path | None = None, line: int | None = None) -> Sample:
        """The sample a record describes; the first broken rule raises, naming file, line, sample and field."""
        sid = d.get("id") if isinstance(d, Mapping) and isinstance(d.get("id"), str) else None
        check_sample_record(d, RaiseFirst(file, line, sid))
        return cls(
            d["id"],
            d["prompt"],
            d["width"],
            d["height"],
            d["split"],
            tuple(Subject._from_checked(s) for s in d["subjects"]),
            dict(d.get("meta") or {}),
            d.get("target"),
        )


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
    def from_header(cls, header: Mapping[str, Any], samples: Sequence[Sample], data_root: str | Path) -> Bench:
        """The Bench a header line describes; a broken header rule raises, naming the field."""
        check_header_record(header, RaiseFirst())
        kind = header.get("kind", BENCH_KIND)
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

    def with_samples(self, samples: Sequence[Sample]) -> Bench:
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
    def from_dict(cls, d: Mapping[str, Any], *, file: str | Path | None = None, line: int | None = None) -> Score:
        """A score record read back (samples.jsonl, the store); anything of the wrong type raises
        :class:`ResultFormatError` naming file, line, sample and field."""
        sid = d.get("sample_id") if isinstance(d, Mapping) and isinstance(d.get("sample_id"), str) else None

        def bad(field_name: str | None, why: str) -> ResultFormatError:
            return ResultFormatError(why, file=file, line=line, sample_id=sid, field=field_name)

        if not isinstance(d, Mapping):
            raise bad(None, f"a score record must be a JSON object, got {type(d).__name__}")
        if not sid:
            raise bad("sample_id", f"sample_id must be a non-empty string, got {d.get('sample_id')!r}")
        if not is_int(d.get("seed")) or not 0 <= d["seed"] < SEED_LIMIT:
            raise bad("seed", f"seed must be an integer in [0, 2**63), got {d.get('seed')!r}")
        _check_metric_map(d.get("metrics"), "metrics", bad)
        subjects = d.get("subjects", [])
        if not isinstance(subjects, list):
            raise bad("subjects", "subjects must be a list")
        subs = []
        for i, sub in enumerate(subjects):
            where = f"subjects[{i}]"
            if not isinstance(sub, Mapping) or not isinstance(sub.get("name"), str):
                raise bad(f"{where}.name", "a subject score must be an object with a string name")
            _check_metric_map(sub.get("metrics"), f"{where}.metrics", bad)
            box = sub.get("detected_box")
            if box is not None and (not isinstance(box, list) or len(box) != 4 or not all(is_number(v) and math.isfinite(v) for v in box)):
                raise bad(f"{where}.detected_box", f"detected_box must be 4 finite numbers or null, got {box!r}")
            if sub.get("iou") is not None and not (is_number(sub["iou"]) and math.isfinite(sub["iou"])):
                raise bad(f"{where}.iou", f"iou must be a finite number or null, got {sub['iou']!r}")
            if sub.get("failure") is not None and not isinstance(sub["failure"], str):
                raise bad(f"{where}.failure", "failure must be a string or null")
            subs.append(SubjectScore(sub["name"], dict(sub["metrics"]), tuple(box) if box else None, sub.get("iou"), sub.get("failure")))
        if d.get("detector_raw") is not None and not isinstance(d["detector_raw"], str):
            raise bad("detector_raw", "detector_raw must be a string or null")
        detections, failures = d.get("detections", []), d.get("failures", [])
        if not isinstance(detections, list) or not all(isinstance(x, Mapping) for x in detections):
            raise bad("detections", "detections must be a list of objects")
        if not isinstance(failures, list) or not all(isinstance(x, str) for x in failures):
            raise bad("failures", "failures must be a list of strings")
        if not isinstance(d.get("smoke", False), bool):
            raise bad("smoke", f"smoke must be true or false, got {d.get('smoke')!r}")
        return cls(
            sid,
            d["seed"],
            dict(d["metrics"]),
            tuple(subs),
            d.get("detector_raw"),
            tuple(detections),
            tuple(failures),
            d.get("smoke", False),
        )


def _check_metric_map(metrics: Any, where: str, bad: Callable[[str, str], Exception]) -> None:
    if not isinstance(metrics, Mapping):
        raise bad(where, f"{where} must be an object of metric values, got {type(metrics).__name__}")
    for key, value in metrics.items():
        if value is not None and not (is_number(value) and math.isfinite(value)):
            raise bad(f"{where}.{key}", f"metric value must be a finite number or null, got {value!r}")


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


# -- record rules ----------------------------------------------------------------------------------
# Each rule reports into a sink and never raises; later rules must cope with fields an earlier
# rule found broken, because `picbench validate` goes on after the first problem.

HEADER_FIELDS = {"schema", "name", "version", "description", "reconstruction", "kind"}
SampleRule = Callable[[Mapping[str, Any], ProblemSink], None]
SubjectRule = Callable[[Mapping[str, Any], str, ProblemSink], None]
SAMPLE_RULES: list[SampleRule] = []
"""Rules over one sample record, in the order ``from_dict`` reports them."""
SUBJECT_RULES: list[SubjectRule] = []
"""Rules over one subject record; ``where`` is its field path (``subjects[0]``)."""


def sample_rule(rule: SampleRule) -> SampleRule:
    SAMPLE_RULES.append(rule)
    return rule


def subject_rule(rule: SubjectRule) -> SubjectRule:
    SUBJECT_RULES.append(rule)
    return rule


def check_sample_record(d: Any, problems: ProblemSink) -> None:
    """Every rule over one sample record (with its subjects) into ``problems``."""
    if not isinstance(d, Mapping):
        problems.error("bad-sample", f"sample must be a JSON object, got {type(d).__name__}")
        return
    for rule in SAMPLE_RULES:
        rule(d, problems)


def check_samples(records: Iterable[tuple[int | None, Any]], problems: ProblemSink) -> Iterator[tuple[int | None, Any]]:
    """Check each (line, record) as it streams past (every sample rule, and ids unique across
    records), yielding it on; the loader and ``picbench validate`` both go through here."""
    seen: dict[str, int | None] = {}
    for line, obj in records:
        sid = obj.get("id") if isinstance(obj, Mapping) and isinstance(obj.get("id"), str) and obj["id"] else None
        here = problems.at(line=line, sample_id=sid)
        check_sample_record(obj, here)
        if sid is not None:
            if sid in seen:
                first = f"first at line {seen[sid]}" if seen[sid] is not None else "also an earlier sample's"
                here.error("duplicate-id", f"duplicate id {sid!r} ({first})", "id")
            else:
                seen[sid] = line
        yield line, obj


def check_header_record(header: Mapping[str, Any], problems: ProblemSink) -> None:
    """The rules of a bench file's header line (unknown fields are only a warning: newer
    picbench versions may add some)."""
    for key in ("name", "version"):
        if not isinstance(header.get(key), str) or not header[key]:
            problems.error("bad-header", f"header lacks {key}", key)
    if not isinstance(header.get("description", ""), str):
        problems.error("bad-header", "header description must be a string", "description")
    if not isinstance(header.get("reconstruction", False), bool):
        problems.error("bad-header", "header reconstruction must be true or false", "reconstruction")
    if header.get("kind", BENCH_KIND) not in KINDS:
        problems.error("bad-header", f"header kind must be one of {list(KINDS)}, got {header.get('kind')!r}", "kind")
    for key in sorted(map(str, set(header) - HEADER_FIELDS)):
        problems.warning("unknown-field", f"unknown header field {key!r}", key)


def check_subject_record(d: Any, where: str, problems: ProblemSink) -> None:
    if not isinstance(d, Mapping):
        problems.error("bad-subject", f"subject must be an object, got {type(d).__name__}", where)
        return
    for rule in SUBJECT_RULES:
        rule(d, where, problems)


def is_int(v: Any) -> bool:
    """A JSON integer (booleans are not numbers here)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _control_char(text: str) -> str | None:
    """The first control or line/paragraph separator character in ``text``, if any."""
    return next((c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)


def _limit_hint(name: str) -> str:
    return f" (raise the limit with {Limits.env_name(name)})"


def path_problem(value: Any) -> str | None:
    """Why ``value`` is not a usable bench-relative image path (absolute and escaping paths are
    refused where the data root is known: :func:`picbench.paths.resolve_in_root`)."""
    if not isinstance(value, str) or not value:
        return f"an image path must be a non-empty string, got {value!r}"
    bad = _control_char(value)
    if bad is not None:
        return f"image path {value!r} holds the control character U+{ord(bad):04X}"
    return None


def box_rule(box: Any, where: str, problems: ProblemSink) -> None:
    """Normalized xyxy: four JSON numbers (not strings or booleans) in [0, 1], x0 < x1, y0 < y1."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        problems.error("bad-box", f"box must be 4 numbers [x0, y0, x1, y1], got {box!r}", where)
    elif not all(is_number(v) for v in box):
        problems.error("bad-box", f"box has a non-numeric value: {box!r}", where)
    elif not all(math.isfinite(v) for v in box):
        problems.error("bad-box", f"box has NaN or infinite values: {box!r}", where)
    elif not all(0.0 <= v <= 1.0 for v in box):
        problems.error("bad-box", f"box {box!r} lies outside [0, 1] (boxes are normalized xyxy)", where)
    elif not (box[0] < box[2] and box[1] < box[3]):
        problems.error("bad-box", f"box {box!r} is empty or inverted (need x0 < x1 and y0 < y1)", where)


@sample_rule
def _id_rule(d: Mapping[str, Any], problems: ProblemSink) -> None:
    sid, limit = d.get("id"), current_limits().max_id_chars
    if not isinstance(sid, str) or not sid:
        problems.error("missing-field", "missing or empty id", "id")
    elif len(sid) > limit:
        problems.error("bad-id", f"id has {len(sid)} characters, more than {limit}" + _limit_hint("max_id_chars"), "id")
    elif (bad := _control_char(sid)) is not None:
        problems.error("bad-id", f"id holds the control character U+{ord(bad):04X}", "id")


@sample_rule
def _schema_rule(d: Mapping[str, Any], problems: ProblemSink) -> None:
    schema = d.get("schema", SAMPLE_SCHEMA)
    if schema != SAMPLE_SCHEMA:
        problems.error("bad-schema", f"unsupported schema {schema!r} (this picbench reads {SAMPLE_SCHEMA})", "schema")


@sample_rule
def _unknown_sample_fields_rule(d: Mapping[str, Any], problems: ProblemSink) -> None:
    for key in sorted(map(str, set(d) - SAMPLE_FIELDS)):
        problems.error("unknown-field", f"unknown field {key!r}", key)


@sample_rule
def _prompt_rule(d: Mapping[str, Any], problems: ProblemSink) -> None:
    prompt, limit = d.get("prompt"), current_limits().max_prompt_chars
    if not isinstance(prompt, str) or not prompt.strip():
        problems.error("empty-prompt", "missing or empty prompt", "prompt")
    elif len(prompt) > limit:
        problems.error("bad-prompt", f"prompt has {len(prompt)} characters, more than {limit}" + _limit_hint("max_prompt_chars"), "prompt")


@sample_rule
def _size_rule(d: Mapping[str, Any], problems: ProblemSink) -> None:
    limit = current_limits().max_side
    for key in ("width", "height"):
        v = d.get(key)
        if not is_int(v) or v <= 0:
            problems.error("bad-size", f"{key} must be a positive integer, got {v!r}", key)
        elif v > limit:
            problems.error("bad-size", f"{key} {v} is more than {limit} pixels" + _limit_hint("max_side"), key)


@sample_rule
def _split_rule(d: Mapping[str, Any], problems: ProblemSink) -> None:
    if d.get("split") not in ("single", "multi"):
        problems.error("bad-split", f"split must be 'single' or 'multi', got {d.get('split')!r}", "split")


@sample_rule
def _meta_rule(d: Mapping[str, Any], problems: ProblemSink) -> None:
    if d.get("meta") is not None and not isinstance(d["meta"], Mapping):
        problems.error("bad-meta", "meta must be an object", "meta")


@sample_rule
def _target_rule(d: Mapping[str, Any], problems: ProblemSink) -> None:
    if d.get("target") is not None and (reason := path_problem(d["target"])) is not None:
        problems.error("bad-paths", f"target: {reason}", "target")


@sample_rule
def _subjects_rule(d: Mapping[str, Any], problems: ProblemSink) -> None:
    subjects, limit = d.get("subjects"), current_limits().max_subjects
    if not isinstance(subjects, (list, tuple)) or not subjects:
        problems.error("bad-subjects", "subjects must be a non-empty list", "subjects")
        return
    if len(subjects) > limit:
        problems.error("bad-subjects", f"{len(subjects)} subjects, more than {limit}" + _limit_hint("max_subjects"), "subjects")
        return
    for i, sub in enumerate(subjects):
        check_subject_record(sub, f"subjects[{i}]", problems)
    split = d.get("split")
    if split == "single" and len(subjects) != 1:
        problems.error("bad-subjects", f"split 'single' needs exactly one subject, got {len(subjects)}", "subjects")
    if split == "multi" and len(subjects) < 2:
        problems.error("bad-subjects", "split 'multi' needs at least two subjects", "subjects")
    depths = [s.get("depth") for s in subjects if isinstance(s, Mapping) and is_int(s.get("depth"))]
    if len(depths) != len(set(depths)):
        problems.error("bad-depth", f"depth ranks repeat: {depths}", "subjects.depth")


@subject_rule
def _unknown_subject_fields_rule(d: Mapping[str, Any], where: str, problems: ProblemSink) -> None:
    for key in sorted(map(str, set(d) - SUBJECT_FIELDS)):
        problems.error("unknown-field", f"unknown field {key!r}", f"{where}.{key}")


@subject_rule
def _names_rule(d: Mapping[str, Any], where: str, problems: ProblemSink) -> None:
    limit = current_limits().max_id_chars
    for key in ("name", "class_word"):
        v = d.get(key)
        if not isinstance(v, str) or not v.strip():
            problems.error("missing-field", f"missing or empty {key}", f"{where}.{key}")
        elif len(v) > limit:
            problems.error("bad-name", f"{key} has {len(v)} characters, more than {limit}" + _limit_hint("max_id_chars"), f"{where}.{key}")


@subject_rule
def _image_lists_rule(d: Mapping[str, Any], where: str, problems: ProblemSink) -> None:
    limit = current_limits().max_references
    for key, required in (("references", True), ("eval_images", False)):
        paths = d.get(key)
        if paths is None and not required:
            continue
        if not isinstance(paths, (list, tuple)) or (required and not paths):
            problems.error("bad-paths", f"{key} must be a {'non-empty ' * required}list of paths", f"{where}.{key}")
        elif len(paths) > limit:
            problems.error("bad-paths", f"{len(paths)} {key}, more than {limit}" + _limit_hint("max_references"), f"{where}.{key}")
        else:
            for j, p in enumerate(paths):
                if (reason := path_problem(p)) is not None:
                    problems.error("bad-paths", reason, f"{where}.{key}[{j}]")


@subject_rule
def _box_rule(d: Mapping[str, Any], where: str, problems: ProblemSink) -> None:
    if d.get("box") is not None:
        box_rule(d["box"], f"{where}.box", problems)


@subject_rule
def _depth_rule(d: Mapping[str, Any], where: str, problems: ProblemSink) -> None:
    depth = d.get("depth")
    if depth is not None and (not is_int(depth) or not 0 <= depth <= MAX_DEPTH_RANK):
        problems.error("bad-depth", f"depth must be an integer in [0, {MAX_DEPTH_RANK}], got {depth!r}", f"{where}.depth")
