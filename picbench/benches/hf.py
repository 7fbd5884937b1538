"""Bench <-> Hugging Face ``datasets.Dataset``, saved to and loaded from a local folder or the Hub.

One row per Sample: ``id, prompt, width, height, split, subjects`` (paths, class words, boxes,
depths), ``meta`` (canonical JSON text, since metas differ per bench) and ``images``, a list of
``{path, image}`` with an ``Image`` feature. Each distinct image's bytes are stored once, in the
row of the first sample that uses it (references and eval images alike; an unreadable image is
left out with a warning naming it, as the bench's samples keep its path): DreamBench's 750
samples share 158 images, and embedding them per row would copy ~100 MB into ~3 GB. The bench
header (name, version, description, reconstruction) is canonical JSON in a ``bench`` column
repeated on every row: unlike ``DatasetInfo.description`` it survives ``push_to_hub`` and any
row selection.

Training pair sets (``picbench.pairs``) add a ``target`` column (None for benches; a dataset
without the column reads as a bench) and ship their target images in ``images`` too. Writing goes
row by row through an Arrow file and reading row by row (``iter_dataset_samples``, which also
takes a streamed ``IterableDataset``), so a large pair set is never all in memory.

Back from a dataset, the images are written under a data root at their bench-relative paths
(refusing unsafe paths, and refusing to overwrite a different file). A local folder and a Hub
repo id go through the same conversion; only the fetch differs, and a failed fetch (offline,
``HF_HUB_OFFLINE=1``, unknown repo) is a :class:`PicbenchError` that says what to do.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from picbench.errors import BenchFormatError, MissingExtraError, PicbenchError
from picbench.paths import picbench_home, resolve_in_root
from picbench.records import BENCH_SCHEMA, Bench, Sample, canonical_json

try:
    import datasets
    from datasets import Features, Image, List, Value
except ImportError as exc:  # the `hf` extra: an eval-only install has no `datasets`
    raise MissingExtraError("Hugging Face dataset import and export", "hf", exc) from exc

_SUBJECT = {
    "name": Value("string"),
    "class_word": Value("string"),
    "references": List(Value("string")),
    "eval_images": List(Value("string")),
    "box": List(Value("float64")),
    "depth": Value("int64"),
}
FEATURES = Features(
    {
        "bench": Value("string"),
        "id": Value("string"),
        "prompt": Value("string"),
        "width": Value("int64"),
        "height": Value("int64"),
        "split": Value("string"),
        "subjects": List(_SUBJECT),
        "meta": Value("string"),
        "target": Value("string"),
        "images": List({"path": Value("string"), "image": Image()}),
    }
)
# Columns a dataset may lack (written before pair sets existed): filled with None.
OPTIONAL_COLUMNS = {"target"}


def bench_rows(bench: Bench) -> Iterator[dict[str, Any]]:
    """One dataset row per sample, lazily (a pair set's target images can be many GB); every
    image's bytes once (see the module docstring); unreadable images warned about at the end."""
    header = canonical_json(bench.header())
    stored: set[str] = set()
    missing: list[str] = []
    for sample in bench.samples:
        d = sample.to_dict()
        row = {key: d[key] for key in ("id", "prompt", "width", "height", "split", "subjects")}
        row.update(bench=header, meta=canonical_json(d["meta"]), target=sample.target)
        new_images = []
        paths = [p for s in sample.subjects for p in (*s.references, *s.eval_images)]
        for rel in dict.fromkeys([*paths, *([sample.target] if sample.target else [])]):
            if rel in stored:
                continue
            stored.add(rel)
            path = resolve_in_root(bench.data_root, rel)
            try:
                data = path.read_bytes()
            except OSError as exc:
                missing.append(f"{rel} (sample {sample.id!r}: {exc.strerror})")
                continue
            new_images.append({"path": rel, "image": {"bytes": data, "path": Path(rel).name}})
        row["images"] = new_images
        yield row
    if missing:
        warnings.warn(
            f"bench {bench.name}: {len(missing)} image(s) could not be read and are not in the dataset: {'; '.join(missing)}", stacklevel=2
        )


def bench_to_dataset(bench: Bench) -> datasets.Dataset:
    """Every sample as a row, in memory (see ``save_bench_hf`` for large sets)."""
    rows: dict[str, list[Any]] = {key: [] for key in FEATURES}
    for row in bench_rows(bench):
        for key in FEATURES:
            rows[key].append(row[key])
    return datasets.Dataset.from_dict(rows, features=FEATURES)


def dataset_to_bench(ds: datasets.Dataset | datasets.IterableDataset, data_root: str | Path) -> Bench:
    """Rebuild the Bench, writing its images under ``data_root`` where they are not there yet."""
    rows = list(iter_dataset_samples(ds, data_root))
    if not rows:
        raise BenchFormatError("the dataset has no rows: a picbench bench dataset carries its header on every row")
    return Bench.from_header(rows[-1][0], [sample for _, sample in rows], data_root)


def iter_dataset_samples(ds: datasets.Dataset | datasets.IterableDataset, data_root: str | Path) -> Iterator[tuple[dict[str, Any], Sample]]:
    """(bench header, Sample) row by row, writing each row's images under ``data_root`` as it
    goes: a streamed dataset (``load_dataset(..., streaming=True)``) never sits in memory whole."""
    data_root = Path(data_root)
    columns = ds.column_names if ds.column_names is not None else list(FEATURES)
    missing_columns = set(FEATURES) - OPTIONAL_COLUMNS - set(columns)
    if missing_columns:
        raise BenchFormatError(f"not a picbench bench dataset: missing column(s) {sorted(missing_columns)}")
    ds = ds.cast_column("images", List({"path": Value("string"), "image": Image(decode=False)}))
    first: str | None = None
    header: dict[str, Any] | None = None
    for row in ds:
        text = row.pop("bench")
        if first is None:
            first, header = text, _parse_header(text)
        elif text != first:
            raise BenchFormatError("the dataset's rows carry different bench headers; expected one", sample_id=row.get("id"), field="bench")
        for image in row.pop("images") or []:
            _materialize(data_root, image["path"], image["image"]["bytes"], sample_id=row["id"])
        try:
            meta = json.loads(row["meta"] or "{}")
        except json.JSONDecodeError as exc:
            raise BenchFormatError(f"meta is not JSON: {exc.msg}", sample_id=row["id"], field="meta") from None
        row["meta"] = meta
        if row.get("target") is None:
            row.pop("target", None)
        row["subjects"] = [{k: v for k, v in s.items() if v is not None} for s in row["subjects"]]
        assert header is not None
        yield header, Sample.from_dict(row)


def _parse_header(text: str) -> dict[str, Any]:
    try:
        header = json.loads(text)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("schema") != BENCH_SCHEMA:
        raise BenchFormatError(f"the dataset's bench column is not a picbench bench header ({BENCH_SCHEMA})", field="bench")
    return header


def _materialize(data_root: Path, rel: str, data: bytes, *, sample_id: str) -> None:
    target = resolve_in_root(data_root, rel)
    if target.is_file():
        if hashlib.sha256(target.read_bytes()).digest() != hashlib.sha256(data).digest():
            raise PicbenchError(
                f"sample {sample_id!r}: {target} exists with other content than the dataset's {rel}; use an empty data root"
            )
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def save_bench_hf(bench: Bench, folder: str | Path) -> Path:
    """Write the dataset folder row by row through an Arrow file (``Dataset.from_generator``),
    so a large pair set never has all its image bytes in memory at once."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="picbench-hf-") as cache:
        ds = datasets.Dataset.from_generator(bench_rows, gen_kwargs={"bench": bench}, features=FEATURES, cache_dir=cache)
        ds.save_to_disk(str(folder))
    return folder


def default_hf_root(source: str) -> Path:
    """Where images of a dataset-loaded bench go unless a data root is given."""
    return picbench_home() / "hf" / re.sub(r"[^A-Za-z0-9_.-]+", "__", source.strip("/"))


def fetch_dataset(source: str | Path, *, streaming: bool = False) -> datasets.Dataset | datasets.IterableDataset:
    """A folder written by ``save_bench_hf`` (memory-mapped), or a Hub repo id (split ``train``;
    ``streaming`` reads it row by row without downloading it whole)."""
    if Path(source).is_dir():
        try:
            return datasets.load_from_disk(str(source))
        except (FileNotFoundError, ValueError) as exc:
            raise PicbenchError(f"{source} is not a dataset folder saved by `picbench bench export --format hf`: {exc}") from exc
    try:
        return datasets.load_dataset(str(source), split="train", streaming=streaming)
    except Exception as exc:  # the hub raises many types (offline, not found, gated)
        offline = datasets.config.HF_HUB_OFFLINE
        raise PicbenchError(
            f"cannot load bench dataset {str(source)!r} from the Hugging Face Hub"
            + (" (offline: HF_HUB_OFFLINE is set)" if offline else "")
            + f": {type(exc).__name__}: {exc}. Pass a local folder written by `picbench bench export BENCH --format hf`, "
            "or download the repo where the Hub is reachable (e.g. `hf download REPO --repo-type dataset`)."
        ) from exc


def load_bench_hf(source: str | Path, data_root: str | Path | None = None) -> Bench:
    """Load a bench from a local dataset folder or a Hub repo id (same conversion either way)."""
    ds = fetch_dataset(source)
    return dataset_to_bench(ds, data_root if data_root is not None else default_hf_root(str(source)))
