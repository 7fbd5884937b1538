"""One resumable HTTP download into a ``.part`` file, renamed when complete.

A rerun after a broken connection asks for the rest with ``Range: bytes=N-``; a server that
ignores the range (200) gets the file again from the start. An HTML answer is refused by name.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from picbench.data.errors import DownloadHTTPError, DownloadInterruptedError, NotAnArchiveError

CHUNK = 1 << 16
TIMEOUT_S = 60
USER_AGENT = "picbench-data-fetch"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

OnBytes = Callable[[int, int | None], None]  # (bytes so far, total or None)


def download(url: str, part: Path, *, on_bytes: OnBytes | None = None, timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` into ``part`` (a ``*.part`` path), resuming what is there; return the
    complete file (``part`` without its suffix). Network failures keep ``part`` for the next try."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part is no prefix of what the server has now
            part.unlink()
            return download(url, part, on_bytes=on_bytes, timeout=timeout)
        raise DownloadHTTPError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadInterruptedError(f"{url}: cannot connect ({reason}); check the URL or --mirror and run again") from exc
    with response:
        if response.headers.get_content_type() == "text/html":
            part.unlink(missing_ok=True)
            raise NotAnArchiveError(f"{url}: the server sent an HTML page (Content-Type text/html), not an archive")
        done, total, mode = _start(response, offset)
        with open(part, mode) as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as exc:  # a reset, a timeout, a short chunk
                    raise _interrupted(url, part, done, total, exc) from exc
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as exc:  # a full disk: name the file (write errors carry no name)
                    raise OSError(exc.errno, exc.strerror, str(part)) from exc
                done += len(chunk)
                if on_bytes is not None:
                    on_bytes(done, total)
            out.flush()
    if total is not None and done < total:
        raise _interrupted(url, part, done, total, "the body ended early")
    complete = part.with_suffix("")
    part.replace(complete)
    return complete


def _start(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None, str]:
    """(bytes already there, total size or None, file mode) for a 200 or 206 answer."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match and int(match[1]) == offset:
            return offset, None if match[3] == "*" else int(match[3]), "ab"
        raise DownloadHTTPError(f"{response.url}: partial answer {response.headers.get('Content-Range')!r} does not start at byte {offset}")
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None, "wb"


def _interrupted(url: str, part: Path, done: int, total: int | None, why: object) -> DownloadInterruptedError:
    of = f" of {total}" if total is not None else ""
    return DownloadInterruptedError(
        f"{url}: download stopped after {done}{of} bytes ({why}); the partial file {part.name} is kept: run the same command again to resume"
    )
