"""No network and an empty Hugging Face cache, for the checks of what happens without weights."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def offline(cache: Path) -> Iterator[None]:
    """No network and an empty hub cache, restored afterwards."""
    import huggingface_hub.constants as hub

    before = (os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE, hub.HF_HUB_CACHE)
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub.HF_HUB_OFFLINE, hub.HF_HUB_CACHE = True, str(cache)
    try:
        yield
    finally:
        if before[0] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before[0]
        hub.HF_HUB_OFFLINE, hub.HF_HUB_CACHE = before[1], before[2]
