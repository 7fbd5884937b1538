"""Bounds on what one bench record may ask for, so a careless or hostile file cannot make a run
allocate tens of gigabytes (a 100000 x 100000 output, 10000 subjects) before failing.

The defaults are generous for every published benchmark (DreamBench and MS-Bench ask for at
most 1024 px, 3 subjects, 6 images per subject); each is overridable through its environment
variable, read when a record is checked, e.g. ``PICBENCH_MAX_SIDE=8192``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from picbench.errors import PicbenchError

SEED_LIMIT = 2**63
"""Seeds must lie in [0, 2**63): torch generators take 64-bit seeds, and the store keeps them as
SQLite's signed 64-bit integers."""


@dataclass(frozen=True)
class Limits:
    max_side: int = 4096
    """largest output width or height, in pixels (PICBENCH_MAX_SIDE)"""
    max_subjects: int = 16
    """subjects in one sample (PICBENCH_MAX_SUBJECTS)"""
    max_references: int = 64
    """reference images, and eval images, per subject (PICBENCH_MAX_REFERENCES)"""
    max_prompt_chars: int = 2000
    """characters in a prompt (PICBENCH_MAX_PROMPT_CHARS); CLIP reads 77 tokens, T5 512"""
    max_id_chars: int = 200
    """characters in a sample id, which names files (PICBENCH_MAX_ID_CHARS)"""

    @staticmethod
    def env_name(field_name: str) -> str:
        return f"PICBENCH_{field_name.upper()}"


def current_limits() -> Limits:
    """The defaults, with each limit whose environment variable is set replaced by its value."""
    values: dict[str, int] = {}
    for f in fields(Limits):
        raw = os.environ.get(Limits.env_name(f.name))
        if raw is None or not raw.strip():
            continue
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise PicbenchError(f"{Limits.env_name(f.name)}={raw!r}: a limit must be a positive integer")
        values[f.name] = value
    return Limits(**values)
