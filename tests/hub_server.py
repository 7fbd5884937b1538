"""A Hugging Face Hub in miniature on 127.0.0.1, for download tests without the network: the
three requests huggingface_hub's Python API makes to list and fetch a model repository's files,
answered from memory with the headers the client reads (X-Repo-Commit, ETag, Content-Length;
X-Error-Code on a 404). Point the client at it with HF_ENDPOINT=Hub.url."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse


class Hub:
    """``repos``: repository id -> {path inside it: bytes}. ``requests`` records (method, path)."""

    def __init__(self, repos: Mapping[str, Mapping[str, bytes]]) -> None:
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                hub._answer(self, body=True)

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def fetched(self) -> list[str]:
        """The repository paths of every file downloaded (GET of a resolve URL)."""
        return [
            "/".join(p.strip("/").split("/")[:2] + p.strip("/").split("/")[4:]) for m, p in self.requests if m == "GET" and "/resolve/" in p
        ]

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = urlparse(handler.path).path
        self.requests.append((handler.command, path))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and parts[4:] == ["revision", "main"]:  # HfApi.model_info(repo, revision="main")
            repo = "/".join(parts[2:4])
            if repo not in self.repos:
                return self._send(handler, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
            siblings = [{"rfilename": name, "size": len(data)} for name, data in sorted(self.repos[repo].items())]
            listing = json.dumps({"id": repo, "sha": self.commit(repo), "siblings": siblings}).encode()
            return self._send(handler, 200, listing, {"Content-Type": "application/json"}, body)
        if len(parts) >= 5 and parts[2] == "resolve":  # hf_hub_download: HEAD for the metadata, then GET
            repo, name = "/".join(parts[:2]), "/".join(parts[4:])
            data = self.repos.get(repo, {}).get(name)
            if data is None:
                return self._send(handler, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
            headers = {"X-Repo-Commit": self.commit(repo), "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
            return self._send(handler, 200, data, headers, body)
        self._send(handler, 404, b"", {}, body)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, data: bytes, headers: Mapping[str, str], body: bool) -> None:
        handler.send_response(code)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)


@contextmanager
def serving(repos: Mapping[str, Mapping[str, bytes]]) -> Iterator[Hub]:
    hub = Hub(repos)
    thread = threading.Thread(target=hub.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.server.shutdown()
        hub.server.server_close()
        thread.join(timeout=30)


def repo_files(folder: Path) -> dict[str, bytes]:
    """{path relative to folder: bytes} of every file under it (a tiny model folder as a hub repository)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
