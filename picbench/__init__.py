"""picbench: benchmark and reference implementation for position-controlled, identity-preserving
multi-subject image customization.

Dependencies point inwards: cli -> runner -> (benches, methods, metrics, store) -> records; the
full layer rules are in docs/contributing.md ("Layers"), enforced by tests/test_layers.py.

The Python front door (docs/python.md): ``picbench.evaluate``, ``picbench.load_results`` and the
functional metrics ``picbench.clip_i``, ``dino``, ``clip_t`` and ``iou``. They are imported on
first use, so ``import picbench`` stays light (no torch, no pandas).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "evaluate": "picbench.api",
    "load_results": "picbench.api",
    "Evaluation": "picbench.api",
    "clip_i": "picbench.functional",
    "dino": "picbench.functional",
    "clip_t": "picbench.functional",
    "iou": "picbench.functional",
}
__all__ = ["Evaluation", "__version__", "clip_i", "clip_t", "dino", "evaluate", "iou", "load_results"]  # = _LAZY + __version__

if TYPE_CHECKING:
    from picbench.api import Evaluation, evaluate, load_results
    from picbench.functional import clip_i, clip_t, dino, iou


def __getattr__(name: str) -> Any:
    """The front door's names, imported when first asked for (PEP 562)."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'picbench' has no attribute {name!r}")
