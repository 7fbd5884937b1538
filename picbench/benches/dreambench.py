"""DreamBench (DreamBooth, CVPR 2023) as picbench benches: ``dreambench`` (750 single-subject
samples) and ``dreambench-multi`` (UNO's 750 two-subject entries).

Decisions, so nobody has to guess:

* ``prompts_and_classes.txt`` is free text: a ``subject_name,class`` table and two Python
  ``prompt_list = [...]`` blocks ("Object Prompts", "Live Subject Prompts") whose items are
  ``'a {0} {1} ...'.format(unique_token, class_token)``. We parse it line by line and read each
  template with ``ast.literal_eval`` of the string literal alone (never ``eval``).
* Live subjects are DreamBooth's pets. The class table does not flag them; they are exactly the
  subjects whose class word is ``cat`` or ``dog`` (9 of 30). A test checks that this reproduces
  the prompt lists of ``dreambench_singleip.json``.
* The evaluation prompt drops the unique token ("a backpack in the jungle"), as the common lists
  do; ``meta`` keeps the template and the unique-token form ("a sks backpack in the jungle").
* ``references`` is the one image per subject that ``dreambench_singleip.json`` gives a method;
  ``eval_images`` is every image of the subject (DreamBooth's protocol scores against all).
* No layout: ``box`` and ``depth`` are None. Output size 512x512 (the resolution UNO evaluates at).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from picbench.benches.jsonl import read_json
from picbench.errors import BenchFormatError
from picbench.records import Bench, Sample, Subject

VERSION = "1"
MULTI_VERSION = "1"
OUTPUT_SIZE = 512
UNIQUE_TOKEN = "sks"
LIVE_CLASSES = frozenset({"cat", "dog"})

DATASET_DIR = "dreambench/dataset"
PROMPTS_FILE = f"{DATASET_DIR}/prompts_and_classes.txt"
SINGLE_LIST = "dreambench/dreambench_singleip.json"
MULTI_LIST = "dreambench/dreambench_multiip.json"
_UNO_PREFIX = "./dreambooth/dataset/"

_TEMPLATE_LINE = re.compile(r"^\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\.format\(\s*unique_token\s*,\s*class_token\s*\)\s*,?\s*$")


@dataclass(frozen=True)
class DreamBenchSpec:
    """What ``prompts_and_classes.txt`` says: subject -> class word, and the two template lists."""

    classes: dict[str, str]
    object_templates: tuple[str, ...]
    live_templates: tuple[str, ...]

    def is_live(self, subject: str) -> bool:
        return self.classes[subject] in LIVE_CLASSES

    def templates_for(self, subject: str) -> tuple[str, ...]:
        return self.live_templates if self.is_live(subject) else self.object_templates


def parse_prompts_and_classes(path: str | Path) -> DreamBenchSpec:
    """Parse the class table and the object / live-subject template lists; any line that fits
    none of the expected forms is an error naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BenchFormatError(f"cannot read: {exc.strerror}", file=path) from exc
    classes: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    section: str | None = None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line in ("Classes", "Prompts", "subject_name,class", "]"):
            continue
        if line in ("Object Prompts", "Live Subject Prompts"):
            section = "live" if line.startswith("Live") else "object"
            continue
        if line.replace(" ", "") == "prompt_list=[":
            if section is None or section in lists:
                raise BenchFormatError(
                    "prompt_list without a preceding 'Object Prompts' / 'Live Subject Prompts' heading", file=path, line=lineno
                )
            lists[section] = []
            continue
        match = _TEMPLATE_LINE.match(raw)
        if match and section in lists:
            template = ast.literal_eval(match.group(1))
            if "{0}" not in template or "{1}" not in template:
                raise BenchFormatError(f"template {template!r} lacks {{0}} or {{1}}", file=path, line=lineno)
            lists[section].append(template)
            continue
        if section is None and line.count(",") == 1:
            subject, class_word = (part.strip() for part in line.split(","))
            if not subject or not class_word or subject in classes:
                raise BenchFormatError(f"bad or repeated class-table row {line!r}", file=path, line=lineno)
            classes[subject] = class_word
            continue
        raise BenchFormatError(f"unexpected line {line!r}", file=path, line=lineno)
    for key in ("object", "live"):
        if not lists.get(key):
            raise BenchFormatError(f"no {key} prompt list found", file=path)
    if not classes:
        raise BenchFormatError("no class table found", file=path)
    return DreamBenchSpec(classes, tuple(lists["object"]), tuple(lists["live"]))


def _read_uno_list(data_root: Path, relative: str) -> list[dict]:
    path = data_root / relative
    entries = read_json(path)
    if not isinstance(entries, list):
        raise BenchFormatError("expected a JSON list of {prompt, image_paths}", file=path)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str) or not isinstance(entry.get("image_paths"), list):
            raise BenchFormatError(f"entry {i} is not {{prompt, image_paths}}", file=path, field=f"[{i}]")
    return entries


def uno_path(path: str, *, file: Path, index: int) -> str:
    """Map UNO's ``./dreambooth/dataset/<subject>/NN.jpg`` to our ``dreambench/dataset/...``."""
    if not path.startswith(_UNO_PREFIX):
        raise BenchFormatError(f"image path {path!r} does not start with {_UNO_PREFIX!r}", file=file, field=f"[{index}].image_paths")
    return f"{DATASET_DIR}/{path[len(_UNO_PREFIX) :]}"


def subject_images(data_root: Path, subject: str) -> tuple[str, ...]:
    """All real images of a subject, sorted (DreamBooth's evaluation set)."""
    folder = data_root / DATASET_DIR / subject
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if folder.is_dir() else []
    return tuple(f"{DATASET_DIR}/{subject}/{name}" for name in names)


def single_references(data_root: Path) -> dict[str, str]:
    """Subject -> the reference image UNO's single-subject list gives a method."""
    file = data_root / SINGLE_LIST
    refs: dict[str, str] = {}
    for i, entry in enumerate(_read_uno_list(data_root, SINGLE_LIST)):
        for p in entry["image_paths"]:
            rel = uno_path(p, file=file, index=i)
            refs.setdefault(rel.split("/")[2], rel)
    return refs


def load(data_root: Path) -> Bench:
    """30 subjects x 25 templates = 750 single-subject samples."""
    data_root = Path(data_root)
    spec = parse_prompts_and_classes(data_root / PROMPTS_FILE)
    refs = single_references(data_root)
    samples = []
    for subject, class_word in spec.classes.items():
        if subject not in refs:
            raise BenchFormatError(f"subject {subject!r} has no reference image in {SINGLE_LIST}", file=data_root / SINGLE_LIST)
        evals = subject_images(data_root, subject) or (refs[subject],)
        for i, template in enumerate(spec.templates_for(subject)):
            samples.append(
                Sample(
                    id=f"{subject}-{i:02d}",
                    prompt=" ".join(template.format("", class_word).split()),
                    width=OUTPUT_SIZE,
                    height=OUTPUT_SIZE,
                    split="single",
                    subjects=(Subject(subject, class_word, (refs[subject],), evals),),
                    meta={
                        "template": template,
                        "template_index": i,
                        "live": spec.is_live(subject),
                        "prompt_with_token": template.format(UNIQUE_TOKEN, class_word),
                        "unique_token": UNIQUE_TOKEN,
                    },
                )
            )
    return Bench(
        "dreambench",
        VERSION,
        tuple(samples),
        data_root,
        description="DreamBench (DreamBooth, CVPR 2023): 30 subjects x 25 prompts, unique token dropped; references from UNO's single-subject list.",
    )


def load_multi(data_root: Path) -> Bench:
    """UNO's 750 two-subject entries; class words from the class table, eval images all of each subject's."""
    data_root = Path(data_root)
    spec = parse_prompts_and_classes(data_root / PROMPTS_FILE)
    file = data_root / MULTI_LIST
    counters: dict[tuple[str, ...], int] = {}
    samples = []
    for index, entry in enumerate(_read_uno_list(data_root, MULTI_LIST)):
        paths = [uno_path(p, file=file, index=index) for p in entry["image_paths"]]
        names = tuple(p.split("/")[2] for p in paths)
        unknown = [n for n in names if n not in spec.classes]
        if unknown:
            raise BenchFormatError(f"subject(s) {unknown} not in the class table", file=file, field=f"[{index}].image_paths")
        k = counters[names] = counters.get(names, -1) + 1
        subjects = tuple(Subject(n, spec.classes[n], (p,), subject_images(data_root, n) or (p,)) for n, p in zip(names, paths))
        samples.append(
            Sample(
                id=f"{'+'.join(names)}-{k:02d}",
                prompt=entry["prompt"],
                width=OUTPUT_SIZE,
                height=OUTPUT_SIZE,
                split="multi",
                subjects=subjects,
                meta={"source_index": index},
            )
        )
    return Bench(
        "dreambench-multi",
        MULTI_VERSION,
        tuple(samples),
        data_root,
        description="DreamBench two-subject pairs from UNO's dreambench_multiip.json (750 entries).",
    )
