"""Fetching the weights a run needs into one weights folder, listing what and how much first
(``picbench weights download``).

Everything lands in the one weights layout, ``DIR/<hub id>/`` as the hub repository is laid out
(where :func:`picbench.checkpoints.local_checkpoint` looks for methods, the trainer, BMPDS's roles
and the metric models), so that ``--weights-dir DIR`` or ``PICBENCH_WEIGHTS_DIR=DIR`` serves a
later run offline.
Everything goes through huggingface_hub's Python API (``HfApi.model_info`` with file sizes, then
``hf_hub_download`` of each file with ``local_dir``), so its environment applies: ``HF_ENDPOINT``
(a mirror), ``HF_TOKEN`` (gated repositories), ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from picbench.checkpoints import TRANSFORMERS_FILES, HubFiles
from picbench.errors import MissingWeightsError, PicbenchError

REVISION = "main"


class HubUnreachableError(MissingWeightsError):
    """The hub (or HF_ENDPOINT's mirror) could not list or serve a repository; nothing of it was fetched."""


@dataclass(frozen=True)
class PlannedFile:
    """One file to fetch: its repository and path there, its size (None where the hub gives
    none), the commit it is fetched at, and where it goes."""

    source: HubFiles
    path: str
    size: int | None
    commit: str
    local: Path

    @property
    def present(self) -> bool:
        """Already in the weights folder at the hub's size (a partial or stale copy is fetched again)."""
        return self.local.is_file() and (self.size is None or self.local.stat().st_size == self.size)


def metric_downloads(detector: str | None) -> tuple[HubFiles, ...]:
    """The default metric models (CLIP and DINO encoders, and the detector unless None); a role a
    plug-in repointed to another repository gets all its files."""
    from picbench.metrics.detectors import DETECTORS
    from picbench.metrics.weights import CLIP, DINO, hub_id

    own_files = {CLIP.hub_id: ("open_clip_config.json", "open_clip_model.safetensors"), DINO.hub_id: ("config.json", "model.safetensors")}
    wanted = [HubFiles(hub_id(role), own_files.get(hub_id(role))) for role in ("clip", "dino")]
    if detector is not None:
        repo = DETECTORS.get(detector).hub_id
        if repo is None:
            raise PicbenchError(f"detector {detector!r} has no hub repository to download; give its weights with --weights detector=DIR")
        wanted.append(HubFiles(repo, TRANSFORMERS_FILES))
    return tuple(wanted)


def plan(sources: Iterable[HubFiles], weights_dir: Path) -> list[PlannedFile]:
    """Every file the sources select, with its size, from the hub's listing of each repository
    (one request a repository); a source selecting no file is an error naming its patterns."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    api = HfApi()
    planned: list[PlannedFile] = []
    for source in dict.fromkeys(sources):
        info = _hub_call(source.repo, lambda source=source: api.model_info(source.repo, revision=REVISION, files_metadata=True))
        sizes = {s.rfilename: s.size for s in info.siblings or ()}
        chosen = list(
            filter_repo_objects(sorted(sizes), allow_patterns=source.files and list(source.files), ignore_patterns=list(source.skip))
        )
        if not chosen:
            raise HubUnreachableError(
                f"{source.repo} has no file matching {list(source.files or ['*'])}"
                + (f" (skipping {list(source.skip)})" if source.skip else "")
                + f"; its files: {sorted(sizes)[:20]}"
            )
        folder = weights_dir / source.repo
        planned.extend(PlannedFile(source, path, sizes[path], str(info.sha), folder / path) for path in chosen)
    return planned


def fetch(files: Sequence[PlannedFile], weights_dir: Path, done: Callable[[PlannedFile], None] = lambda f: None) -> int:
    """Fetch every file not yet present, at the commit it was listed at; returns how many were fetched."""
    from huggingface_hub import hf_hub_download

    fetched = 0
    for f in files:
        if not f.present:
            _hub_call(
                f.source.repo,
                lambda f=f: hf_hub_download(f.source.repo, f.path, revision=f.commit, local_dir=weights_dir / f.source.repo),
            )
            fetched += 1
        done(f)
    return fetched


def _hub_call(repo: str, call: Callable):
    """``call()``, its hub and network errors turned into one that names the repository and what to do."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        return call()
    except OfflineModeIsEnabled as exc:
        raise HubUnreachableError(
            f"{repo}: HF_HUB_OFFLINE is set, so the hub cannot be asked for it; nothing of it was downloaded. "
            "Run this where the hub is reachable (unset HF_HUB_OFFLINE), then copy the weights folder to this machine"
        ) from exc
    except GatedRepoError as exc:
        raise HubUnreachableError(
            f"{repo} is gated: accept its licence on its hub page, then log in (`hf auth login`) or set HF_TOKEN, and run this again"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise HubUnreachableError(f"{repo} was not found on the hub (or is private: log in with `hf auth login` or set HF_TOKEN)") from exc
    except (HfHubHTTPError, OSError, *_network_errors()) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise HubUnreachableError(
            f"{repo}: the hub could not be reached ({type(exc).__name__}: {first}); nothing more was downloaded, "
            "files already fetched are kept. Run the same command again to go on"
        ) from exc


def _network_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's own errors (connection refused, timeouts): httpx2 in huggingface_hub 2.x,
    httpx or requests in older releases; whichever are installed."""
    found: list[type[BaseException]] = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)
