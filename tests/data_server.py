"""A real HTTP server on 127.0.0.1 for the data-fetch tests, and archives in GitHub's codeload
layout built from the shared data (plus the upstream prompt table in tests/fixtures).

The server answers ``GET /OWNER/REPO/tar.gz/COMMIT`` with the archive registered for that path,
honours ``Range: bytes=N-`` (206), logs every request's path and Range header, and has switchable
faults: ``truncate`` (full Content-Length, half the body, then close), ``die`` (half the body, then
the whole server stops), ``html`` (an HTML error page, text/html), ``html-as-octet`` (the same page
labelled application/octet-stream), ``ignore-range`` (200 with the whole body to a Range request).
"""

from __future__ import annotations

import io
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from picbench.data.manifest import Manifest
from picbench.data.sources import Source

FIXTURES = Path(__file__).parent / "fixtures"
UPSTREAM_FIXTURES = {"msdiffusion/dataset/prompts/msbench.py": FIXTURES / "ms-diffusion" / "msbench.py"}
HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Rate limit</title></head><body>Too many requests</body></html>\n"


def upstream_files(source: Source, data_root: Path, manifest: Manifest) -> dict[str, bytes]:
    """Repository-relative path -> content of the manifest's files of ``source`` that the data root holds."""
    files = {}
    for entry in manifest.for_source(source):
        derived = [d for d in source.derived if d.path == entry.path]
        if derived:
            files[derived[0].upstream] = UPSTREAM_FIXTURES[derived[0].upstream].read_bytes()
        elif (data_root / entry.path).is_file():
            files[source.upstream_path(entry.path)] = (data_root / entry.path).read_bytes()  # type: ignore[index]
    files["README.md"] = b"# not taken by picbench\n"
    return files


def tar_gz(top: str, files: dict[str, bytes], *, commit: str = "", extra: Callable[[tarfile.TarFile], None] | None = None) -> bytes:
    """A tar.gz as ``git archive`` makes it: pax format, a global header naming the commit, folder
    entries, every member under ``top/``. ``extra`` may add hostile members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": commit}, compresslevel=1) as tar:
        folders = sorted({f"{top}/" + "/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)} | {top})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o775
            tar.addfile(info)
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size, info.mode = len(data), 0o664
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    return buf.getvalue()


def zip_bytes(top: str, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for path, data in sorted(files.items()):
            archive.writestr(f"{top}/{path}", data)
    return buf.getvalue()


def source_archive(source: Source, data_root: Path, manifest: Manifest, **kwargs) -> bytes:
    return tar_gz(source.top_folder, upstream_files(source, data_root, manifest), commit=source.commit, **kwargs)


class ArchiveServer:
    """Serve archives at codeload paths; see the module docstring for faults."""

    def __init__(self, archives: dict[str, bytes] | None = None) -> None:
        self.archives: dict[str, bytes] = dict(archives or {})
        self.fault: str | None = None
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, self.headers.get("Range")))
                if server.fault in ("html", "html-as-octet"):
                    self._send(200, HTML_PAGE, "text/html; charset=utf-8" if server.fault == "html" else "application/octet-stream")
                    return
                body = server.archives.get(self.path)
                if body is None:
                    self._send(404, b"not found", "text/plain")
                    return
                start = 0
                ranged = self.headers.get("Range")
                if ranged and server.fault != "ignore-range":
                    start = int(ranged.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(body)}"})
                        return
                rest = body[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", "application/x-gzip")
                self.send_header("Content-Length", str(len(rest)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if server.fault in ("truncate", "die"):
                    self.wfile.write(rest[: len(rest) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    if server.fault == "die":
                        threading.Thread(target=server.stop, daemon=True).start()
                    return
                self.wfile.write(rest)

            def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self, sources: Iterable[Source], make: Callable[[Source], bytes]) -> None:
        for source in sources:
            self.archives[f"/{source.owner}/{source.repo}/tar.gz/{source.commit}"] = make(source)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
