"""The manifest shipped in the package: size and sha256 of every data file, computed from the
shared data snapshot that holds the same files as the pinned upstream commits
(``scripts/data_manifest.py`` regenerates it; a test keeps it equal to the snapshot).

A file absent from that snapshot is listed by its upstream git blob id instead
(``sha1(b"blob <size>\\0" + content)``, what ``git ls-tree`` prints) and marked optional: a source
that lacks it is reported, not refused; a source that has it must match the blob id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from picbench.data.errors import ChecksumMismatchError
from picbench.data.sources import SOURCES, Source

MANIFEST_RESOURCE = "manifest.json"
FORMAT = 1
CHUNK = 1 << 20

# Files the snapshot lacks: data path -> (upstream git blob id, why). The id is what
# `git ls-tree 74eb2d6d msbench/living/` prints in MS-Diffusion/MS-Diffusion.
BLOB_ONLY = {
    "msbench/images/living/cat1.jpg": (
        "836f1a880a504e1cb1b067579fbb8352bdb1a2f0",
        "absent from the shared snapshot (too large there); verified by its upstream git blob id",
    ),
}


@dataclass(frozen=True)
class FileEntry:
    """What one data file must be. ``size``/``sha256`` are None for a blob-only entry."""

    path: str
    size: int | None = None
    sha256: str | None = None
    git_blob: str | None = None
    optional: bool = False

    def to_dict(self) -> dict:
        d: dict = {"size": self.size, "sha256": self.sha256} if self.sha256 else {"git_blob": self.git_blob}
        if self.optional:
            d["optional"] = True
            d["note"] = BLOB_ONLY.get(self.path, ("", ""))[1]
        return d

    def verify(self, file: Path, origin: str) -> None:
        """Raise :class:`ChecksumMismatchError` naming ``origin`` unless ``file`` is this entry."""
        size = file.stat().st_size
        if self.size is not None and size != self.size:
            raise ChecksumMismatchError(f"{self.path} (from {origin}): size {size} bytes, the manifest says {self.size}")
        sha256, blob = file_digests(file, size)
        if self.sha256 is not None and sha256 != self.sha256:
            raise ChecksumMismatchError(f"{self.path} (from {origin}): sha256 {sha256}, the manifest says {self.sha256}")
        if self.git_blob is not None and blob != self.git_blob:
            raise ChecksumMismatchError(f"{self.path} (from {origin}): git blob id {blob}, upstream's is {self.git_blob}")


@dataclass(frozen=True)
class Manifest:
    files: dict[str, FileEntry]

    def for_source(self, source: Source) -> list[FileEntry]:
        return [e for p, e in sorted(self.files.items()) if source.owns(p)]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "files": {p: e.to_dict() for p, e in sorted(self.files.items())}}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"manifest format {data.get('format')!r}, expected {FORMAT}")
        return cls(
            {
                p: FileEntry(p, d.get("size"), d.get("sha256"), d.get("git_blob"), bool(d.get("optional", False)))
                for p, d in data["files"].items()
            }
        )


def file_digests(file: Path, size: int | None = None) -> tuple[str, str]:
    """sha256 and git blob id of a file, in one read."""
    size = file.stat().st_size if size is None else size
    sha256, blob = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    with open(file, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha256.update(chunk)
            blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest()


def load_manifest() -> Manifest:
    """The manifest shipped in the package."""
    return Manifest.from_json(resources.files("picbench.data").joinpath(MANIFEST_RESOURCE).read_text(encoding="utf-8"))


def data_files(root: Path, sources: Iterable[Source] = SOURCES.values()) -> list[str]:
    """The data-root paths under ``root`` that some source provides (the snapshot's README and
    other folders are not fetched)."""
    sources = list(sources)
    found = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(p for p in found if any(s.owns(p) for s in sources))


def build_manifest(root: Path) -> Manifest:
    """The manifest of a data root holding the fetched layout, plus the blob-only entries."""
    files = {}
    for rel in data_files(root):
        sha256, _ = file_digests(root / rel)
        files[rel] = FileEntry(rel, (root / rel).stat().st_size, sha256)
    for rel, (blob, _) in BLOB_ONLY.items():
        files[rel] = FileEntry(rel, git_blob=blob, optional=True)
    return Manifest(files)
