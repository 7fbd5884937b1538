"""Regenerate picbench/data/manifest.json from a data root holding the fetched layout.

python scripts/data_manifest.py [DATA_ROOT]     # default: ../shared/data beside the checkout
"""

from __future__ import annotations

import sys
from pathlib import Path

from picbench.data.manifest import MANIFEST_RESOURCE, build_manifest

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data"
    manifest = build_manifest(root.resolve())
    out = REPO / "picbench" / "data" / MANIFEST_RESOURCE
    out.write_text(manifest.to_json(), encoding="utf-8")
    print(f"wrote {out}: {len(manifest.files)} files from {root}")
