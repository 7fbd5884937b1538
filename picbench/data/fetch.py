"""``picbench data fetch``: get each source's files, verify every one against the manifest, then
move them into the data root.

Everything in flight lives in ``<root>/.fetch/``: the download (``*.tar.gz.part`` while it grows,
kept after a broken connection so a rerun resumes it) and a staging folder per source. A source's
files are moved into place (one ``rename`` each) only after all of them were read and verified, so
the data layout only ever holds whole, verified files; ``.fetch/`` is removed when a fetch ends
well. A source whose files are all present (existence and size; ``verify=True`` hashes them too) is
skipped without touching the network.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from picbench.data.archive import CORRUPT_ARCHIVE_ERRORS, Member, iter_archive, iter_checkout
from picbench.data.download import OnBytes, download
from picbench.data.errors import (
    ChecksumMismatchError,
    CorruptArchiveError,
    DiskFullError,
    MissingFileError,
    NotAnArchiveError,
    ReadOnlyDataRootError,
    UnsafeArchiveError,
)
from picbench.data.manifest import CHUNK, FileEntry, Manifest, file_digests, load_manifest
from picbench.data.sources import Derived, Source, mirror_base
from picbench.errors import FormatError

WORK_DIR = ".fetch"
LOCAL_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


@dataclass
class SourceOutcome:
    source: Source
    action: str  # "present", "downloaded" or "copied"
    placed: int = 0
    unverifiable: list[str] = field(default_factory=list)  # optional files the source lacks
    origin: str = ""  # the URL or local copy the files came from


@dataclass
class Reporter:
    """Where a fetch tells what it does: ``say`` for lines, ``on_bytes(source, done, total)``."""

    say: Callable[[str], None] = lambda text: None
    on_bytes: Callable[[Source, int, int | None], None] = lambda source, done, total: None


def fetch(
    sources: list[Source],
    root: Path,
    *,
    mirror: str | None = None,
    from_dir: Path | None = None,
    verify: bool = False,
    manifest: Manifest | None = None,
    reporter: Reporter | None = None,
) -> list[SourceOutcome]:
    """Make ``root`` hold every manifest file of ``sources``. Raises a :class:`FetchError`
    subclass naming the source and file; what was placed before stays (verified)."""
    manifest = manifest or load_manifest()
    reporter = reporter or Reporter()
    root = Path(root)
    needed = {s.name for s in sources if _needed(root, manifest.for_source(s), verify)}
    outcomes = {s.name: SourceOutcome(s, "present") for s in sources if s.name not in needed}
    if needed:  # a complete data root is not written to at all (it may be read-only)
        with _locked_work_dir(root) as work:
            for source in (s for s in sources if s.name in needed):
                entries = manifest.for_source(source)
                outcomes[source.name] = _fetch_source(source, entries, root, work, mirror=mirror, from_dir=from_dir, reporter=reporter)
    return [outcomes[s.name] for s in sources]


def _needed(root: Path, entries: list[FileEntry], verify: bool) -> list[FileEntry]:
    """Required entries not present as the manifest says (size; with ``verify`` the hashes too)."""
    needed = []
    for entry in entries:
        path = root / entry.path
        if entry.optional:
            continue
        if not path.is_file() or path.stat().st_size != entry.size:
            needed.append(entry)
        elif verify and file_digests(path)[0] != entry.sha256:
            needed.append(entry)
    return needed


@contextmanager
def _locked_work_dir(root: Path) -> Iterator[Path]:
    """``<root>/.fetch``, held under an exclusive lock (one fetch per data root at a time);
    removed afterwards unless a partial download waits there for a rerun."""
    work = root / WORK_DIR
    try:
        work.mkdir(parents=True, exist_ok=True)
        lock = open(work / "lock", "w")
    except OSError as exc:
        _raise_named(exc, root)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield work
        finally:
            (work / "lock").unlink(missing_ok=True)
            if not any(work.iterdir()):
                work.rmdir()


def _fetch_source(
    source: Source, entries: list[FileEntry], root: Path, work: Path, *, mirror: str | None, from_dir: Path | None, reporter: Reporter
) -> SourceOutcome:
    staging = work / f"{source.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    downloaded: Path | None = None
    try:
        if from_dir is not None:
            origin = _local_copy(Path(from_dir), source)
            action, described = "copied", str(origin)
            reporter.say(f"{source.label}: reading {origin}")
        else:
            url = source.archive_url(mirror_base(mirror))
            reporter.say(f"{source.label}: downloading {url}")
            on_bytes: OnBytes = lambda done, total: reporter.on_bytes(source, done, total)  # noqa: E731
            complete = work / f"{source.top_folder}.tar.gz"  # a download finished by an earlier, interrupted run
            origin = downloaded = complete if complete.is_file() else download(url, complete.with_suffix(".gz.part"), on_bytes=on_bytes)
            action, described = "downloaded", url
        members = iter_checkout(origin, _upstream_paths(source, entries)) if origin.is_dir() else iter_archive(origin, source.top_folder)
        try:
            staged = _stage(source, entries, members, staging, origin.name)
        except CORRUPT_ARCHIVE_ERRORS as exc:
            raise CorruptArchiveError(f"{origin.name} ({source.label}): the archive is corrupt or truncated ({exc})") from exc
        missing = [e for e in entries if e.path not in staged]
        required = [e.path for e in missing if not e.optional]
        if required:
            shown = ", ".join(required[:5]) + (f" and {len(required) - 5} more" if len(required) > 5 else "")
            raise MissingFileError(f"{origin.name} ({source.label}) lacks {len(required)} file(s) the manifest lists: {shown}")
        for rel in sorted(staged):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged[rel], root / rel)
    except (ChecksumMismatchError, CorruptArchiveError, NotAnArchiveError, UnsafeArchiveError, MissingFileError, FormatError):
        if downloaded is not None:  # a bad archive: resuming it cannot help
            downloaded.unlink(missing_ok=True)
        raise
    except OSError as exc:
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            for part in work.glob("*.part"):
                part.unlink(missing_ok=True)  # free what this fetch took
        _raise_named(exc, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if downloaded is not None:
        downloaded.unlink(missing_ok=True)
    return SourceOutcome(source, action, len(staged), [e.path for e in missing], described)


def _upstream_paths(source: Source, entries: list[FileEntry]) -> list[str]:
    derived = {d.path: d.upstream for d in source.derived}
    return [derived.get(e.path) or source.upstream_path(e.path) for e in entries]  # type: ignore[misc]


def _stage(source: Source, entries: list[FileEntry], members: Iterator[Member], staging: Path, origin: str) -> dict[str, Path]:
    """Write the manifest's files of ``members`` under ``staging``, each verified; data path -> file."""
    by_path = {e.path: e for e in entries}
    derived = {d.upstream: d for d in source.derived}
    staged: dict[str, Path] = {}
    for member in members:
        try:
            path, target = _stage_member(source, member, by_path, derived, staging)
        except OSError as exc:  # a full disk: name the file (write errors carry no name)
            raise OSError(exc.errno, exc.strerror, exc.filename or str(staging / member.upstream)) from exc
        if path is None:
            continue
        by_path[path].verify(target, origin)
        staged[path] = target
    return staged


def _stage_member(
    source: Source, member: Member, by_path: dict[str, FileEntry], derived: dict[str, Derived], staging: Path
) -> tuple[str | None, Path]:
    """Write one member under ``staging`` if the manifest wants it: (data path or None, file)."""
    if member.upstream in derived:
        rule = derived[member.upstream]
        with member.open() as fh:
            data = rule.convert(fh.read())
        target = _staged_path(staging, rule.path)
        with open(target, "wb") as out:
            out.write(data)
            os.fsync(out.fileno())
        return rule.path, target
    path = source.data_path(member.upstream)
    if path is None or path not in by_path:
        return None, staging
    target = _staged_path(staging, path)
    with member.open() as fh, open(target, "wb") as out:
        shutil.copyfileobj(fh, out, CHUNK)
        out.flush()
        os.fsync(out.fileno())  # whole on disk before the rename that publishes it
    return path, target


def _staged_path(staging: Path, rel: str) -> Path:
    target = staging / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _local_copy(from_dir: Path, source: Source) -> Path:
    """The archive or checkout of ``source`` in ``from_dir``: ``{repo}-{commit}.tar.gz|.tgz|.zip``,
    a folder ``{repo}-{commit}/`` (an unpacked archive) or ``{repo}/`` (a checkout)."""
    names = [f"{source.top_folder}{suffix}" for suffix in LOCAL_ARCHIVE_SUFFIXES] + [source.top_folder, source.repo]
    for name in names:
        if (from_dir / name).exists():
            return from_dir / name
    raise MissingFileError(f"--from {from_dir}: no copy of {source.label} (looked for {', '.join(names)})")


def _on_the_way_to(root: Path, filename: str | bytes | None) -> bool:
    """Whether ``filename`` is the data root, inside it, or one of the folders above it."""
    if filename is None:
        return True
    path, root = Path(os.path.abspath(os.fsdecode(filename))), Path(os.path.abspath(root))
    return path == root or root in path.parents or path in root.parents


def _raise_named(exc: OSError, root: Path) -> NoReturn:
    """Re-raise a full disk or an unwritable data root as its named error; anything else as is."""
    if exc.errno == errno.ENOSPC:
        raise DiskFullError(
            f"no space left on the device holding {root} (writing {exc.filename or 'a file'}); free space and run again"
        ) from exc
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and _on_the_way_to(root, exc.filename):  # not a --from copy
        raise ReadOnlyDataRootError(
            f"cannot write to the data root {root} ({os.strerror(exc.errno)}: {exc.filename}): "
            "set PICBENCH_HOME to a writable folder or pass --data-dir"
        ) from exc
    raise exc
