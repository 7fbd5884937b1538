"""The trainer's test configs: the shipped tiny config pointed at a test's pair set and folder."""

from __future__ import annotations

import json
from pathlib import Path

from picbench.reference_impl.training import CONFIG_DIR


def tiny_config(folder: Path, pairs: Path, top: dict | None = None, **tables: dict) -> Path:
    """The shipped tiny config with its paths pointed at `pairs` and `folder`, the keys at its top
    replaced by `top`, tables overridden."""
    text = (CONFIG_DIR / "tiny.toml").read_text()
    text = text.replace('"../../../pairs/paste-pairs"', json.dumps(str(pairs))).replace(
        '"../../../runs/train/tiny"', json.dumps(str(folder / "run"))
    )
    header = "\n".join(f"{k} = {json.dumps(v)}" for k, v in (top or {}).items())
    text = "\n".join(line for line in text.split("\n") if not any(line.startswith(f"{k} = ") for k in top or {}))
    text = header + "\n" + text
    for table, values in tables.items():
        header = f"[{table}]\n"
        assert header in text, table
        text = text.replace(header, header + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        for key in values:  # drop the shipped line the override replaces
            lines = text.split("\n")
            start = lines.index(header.strip())
            seen = [i for i in range(start + 1, len(lines)) if lines[i].startswith(f"{key} = ")]
            if len(seen) > 1:
                del lines[seen[1]]
            text = "\n".join(lines)
    path = folder / "train.toml"
    path.write_text(text)
    return path
