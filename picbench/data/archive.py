"""Read a source's files from a tar.gz or zip archive in GitHub's layout, or from a checkout
folder, refusing anything that could write outside the data root.

An archive is refused whole (:class:`UnsafeArchiveError`) if any member has an absolute name, a
``..`` part, lies outside the one top folder ``{repo}-{commit}/``, or is a symlink, hard link or
device, even a member picbench would not take: such an archive was not made by GitHub. Members are
read as streams; nothing is extracted by the archive library itself.
"""

from __future__ import annotations

import gzip
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from picbench.data.errors import NotAnArchiveError, UnsafeArchiveError

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass(frozen=True)
class Member:
    """A regular file of a source: its path relative to the repository root, and a reader."""

    upstream: str
    size: int
    open: Callable[[], IO[bytes]]  # valid only until the iteration moves on (tar streams)


def archive_kind(path: Path) -> str:
    """``gzip`` or ``zip`` by the first bytes; an HTML page or anything else is refused by name."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")) or b"<html" in text:
        raise NotAnArchiveError(f"{path.name}: the server sent an HTML page, not an archive (a mirror's error or login page?)")
    raise NotAnArchiveError(f"{path.name}: not a tar.gz or zip archive (first bytes {head[:8]!r})")


def safe_member_name(name: str, top: str, archive: str) -> str | None:
    """The member's path below ``top`` ('' for ``top`` itself), or an :class:`UnsafeArchiveError`."""
    if "\0" in name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute or non-POSIX name")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} escapes its folder ('..')")
    if not parts or parts[0] != top:
        raise UnsafeArchiveError(f"{archive}: member {name!r} lies outside the archive's folder {top}/")
    return "/".join(parts[1:])


# What reading a damaged archive raises, from the iteration or from a member's stream.
CORRUPT_ARCHIVE_ERRORS = (tarfile.ReadError, tarfile.StreamError, EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile)


def iter_archive(path: Path, top: str) -> Iterator[Member]:
    """The regular files of an archive, in archive order; see the module docstring for refusals.
    Reading a damaged one raises one of :data:`CORRUPT_ARCHIVE_ERRORS`."""
    return _iter_tar(path, top) if archive_kind(path) == "gzip" else _iter_zip(path, top)


def _iter_tar(path: Path, top: str) -> Iterator[Member]:
    with tarfile.open(path, mode="r|gz") as tar:
        for info in tar:
            rel = safe_member_name(info.name, top, path.name)
            if info.issym() or info.islnk():
                raise UnsafeArchiveError(f"{path.name}: member {info.name!r} is a link (to {info.linkname!r}); refused")
            if info.isdir():
                continue
            if not info.isreg():
                raise UnsafeArchiveError(f"{path.name}: member {info.name!r} is not a regular file or folder; refused")
            yield Member(rel, info.size, lambda info=info: tar.extractfile(info))


def _iter_zip(path: Path, top: str) -> Iterator[Member]:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        for info in infos:  # check every name before yielding any
            safe_member_name(info.filename, top, path.name)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where the zip tool recorded no Unix type
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchiveError(f"{path.name}: member {info.filename!r} is a link or special file; refused")
        for info in infos:
            if not info.is_dir():
                rel = safe_member_name(info.filename, top, path.name)
                yield Member(rel, info.file_size, lambda info=info: archive.open(info))


def iter_checkout(folder: Path, wanted: list[str]) -> Iterator[Member]:
    """The ``wanted`` files (repository-relative) of a checkout folder that exist; a symlink on the
    way is refused, as in an archive."""
    folder = Path(folder)
    for rel in wanted:
        path = folder
        for part in PurePosixPath(rel).parts:
            path = path / part
            if path.is_symlink():
                raise UnsafeArchiveError(f"{folder}: {path.relative_to(folder)} is a symlink; refused")
        if path.is_file():
            yield Member(rel, path.stat().st_size, lambda path=path: open(path, "rb"))
