"""Where each file of the data root comes from: upstream repositories pinned to full commits, the
upstream path of every file, and each source's licence. One table, read by the fetcher, the
manifest script and docs/data.md.

Archives follow GitHub's codeload layout: ``{base}/{owner}/{repo}/tar.gz/{commit}`` answers a
tar.gz whose members all lie under ``{repo}-{commit}/``. A mirror (``--mirror URL`` or
``$PICBENCH_DATA_MIRROR``) replaces ``{base}`` and must serve the same paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from picbench.errors import UnknownNameError

DEFAULT_BASE_URL = "https://codeload.github.com"
MIRROR_ENV = "PICBENCH_DATA_MIRROR"


@dataclass(frozen=True)
class Derived:
    """A data file made from one upstream file by a pure conversion (no upstream code runs)."""

    upstream: str
    path: str
    convert: Callable[[bytes], bytes]


@dataclass(frozen=True)
class Source:
    """One upstream repository at one commit and the files the data root takes from it.

    ``copies`` maps an upstream path (a file, or a folder ending in ``/``) to its data-root path
    (likewise); ``derived`` lists files converted from upstream ones."""

    name: str
    owner: str
    repo: str
    commit: str
    licence: str
    licence_files: tuple[str, ...]
    copies: tuple[tuple[str, str], ...]
    derived: tuple[Derived, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.owner}/{self.repo} @ {self.commit[:8]}"

    @property
    def top_folder(self) -> str:
        """The one folder every member of a codeload archive lies under."""
        return f"{self.repo}-{self.commit}"

    def archive_url(self, base: str | None = None) -> str:
        return f"{(base or DEFAULT_BASE_URL).rstrip('/')}/{self.owner}/{self.repo}/tar.gz/{self.commit}"

    def data_path(self, upstream: str) -> str | None:
        """The data-root path a copied upstream file goes to, or None where it is not taken."""
        for src, dst in self.copies:
            if src.endswith("/") and upstream.startswith(src):
                return dst + upstream[len(src) :]
            if upstream == src:
                return dst
        return None

    def upstream_path(self, path: str) -> str | None:
        """The inverse of :meth:`data_path` for copied files."""
        for src, dst in self.copies:
            if dst.endswith("/") and path.startswith(dst):
                return src + path[len(dst) :]
            if path == dst:
                return src
        return None

    def owns(self, path: str) -> bool:
        return self.upstream_path(path) is not None or any(d.path == path for d in self.derived)


def _msbench_json(text: bytes) -> bytes:
    from picbench.data.msbench_table import msbench_table_json

    return msbench_table_json(text.decode("utf-8"))


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="dreambooth",
            owner="google",
            repo="dreambooth",
            commit="4f887af7970a06fc0cd3adaa1d0b368547d6a1d0",
            licence="CC BY 4.0 (LICENSE.md); per-image credits in dataset/references_and_licenses.txt",
            licence_files=("dreambench/LICENSE.md", "dreambench/dataset/references_and_licenses.txt"),
            copies=(("dataset/", "dreambench/dataset/"), ("LICENSE.md", "dreambench/LICENSE.md")),
        ),
        Source(
            name="uno",
            owner="bytedance",
            repo="UNO",
            commit="d305981b9e301315b5c110aef9c7eed827457858",
            licence="Apache-2.0 (LICENSE)",
            licence_files=("dreambench/LICENSE.uno-json",),
            copies=(
                ("datasets/dreambench_singleip.json", "dreambench/dreambench_singleip.json"),
                ("datasets/dreambench_multiip.json", "dreambench/dreambench_multiip.json"),
                ("LICENSE", "dreambench/LICENSE.uno-json"),
            ),
        ),
        Source(
            name="ms-diffusion",
            owner="MS-Diffusion",
            repo="MS-Diffusion",
            commit="74eb2d6d96669a8be9e786410de445ea41c187c0",
            licence="MIT (LICENSE)",
            licence_files=("msbench/LICENSE",),
            copies=(("msbench/", "msbench/images/"), ("LICENSE", "msbench/LICENSE")),
            derived=(Derived("msdiffusion/dataset/prompts/msbench.py", "msbench/msbench.json", _msbench_json),),
        ),
    )
}

# What `picbench data fetch NAME` gets: the sources a bench family's loaders read.
BUNDLES: dict[str, tuple[str, ...]] = {
    "dreambench": ("dreambooth", "uno"),
    "msbench": ("ms-diffusion",),
    "all": ("dreambooth", "uno", "ms-diffusion"),
}


def sources_for(bundle: str) -> list[Source]:
    if bundle not in BUNDLES:
        raise UnknownNameError(f"unknown data set {bundle!r} (known: {', '.join(BUNDLES)})")
    return [SOURCES[name] for name in BUNDLES[bundle]]


def mirror_base(explicit: str | None = None) -> str:
    """The base URL of every download: ``--mirror``, else ``$PICBENCH_DATA_MIRROR``, else GitHub."""
    return explicit or os.environ.get(MIRROR_ENV) or DEFAULT_BASE_URL
