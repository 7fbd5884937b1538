"""Keep third-party chatter out of picbench's output unless ``picbench -v`` asks for it: the
libraries' Python warnings, their log records below ERROR, and their tqdm progress bars (Hub
downloads, diffusers' denoising loops). picbench's own warnings, errors and rich progress bars stay.

It runs before a verb imports any heavy library, so the environment switches below are read by
those libraries when they load; a switch the user already set is left as it is.
"""

from __future__ import annotations

import logging
import os
import warnings

QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub's download bars
    "TQDM_DISABLE": "1",  # every other tqdm bar (diffusers' pipelines, datasets)
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
THIRD_PARTY_LOGGERS = (
    "transformers",
    "diffusers",
    "huggingface_hub",
    "accelerate",
    "timm",
    "open_clip",
    "torch",
    "PIL",
    "datasets",
    "peft",
)


def quiet_third_party() -> None:
    """Silence warnings and progress bars of every library but picbench (see the module docstring)."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"picbench(\.|$)")
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
