"""MS-Bench's prompt table as JSON, read from MS-Diffusion's Python file without running it.

``msdiffusion/dataset/prompts/msbench.py`` (MS-Diffusion/MS-Diffusion @ 74eb2d6d) is a list of
assignments of literals, plus one dict (``subject_combination_prompts``) whose values name earlier
lists. Each right-hand side goes through ``ast.literal_eval``; a bare name is looked up among the
literals already read. Anything else (a call, an import, an expression) is refused.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from picbench.errors import FormatError

UPSTREAM_FILE = "msdiffusion/dataset/prompts/msbench.py"

# msbench.json key <- variable of msbench.py, in the JSON's order.
KEYS = {
    "subject_classes": "data_class_dict",
    "two_subject_combinations": "two_subject_combinations",
    "three_subject_combinations": "three_subject_combinations",
    "combination_boxes_xyxy_normalized": "subject_combination_boxes",
    "combination_prompt_templates": "subject_combination_prompts",
}


def read_assignments(text: str) -> dict[str, Any]:
    """Every ``NAME = literal`` of the module (a dict's values may name earlier literals)."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise FormatError(f"not Python: {exc.msg}", file=UPSTREAM_FILE, line=exc.lineno) from exc
    values: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise FormatError("only `NAME = literal` statements are expected", file=UPSTREAM_FILE, line=node.lineno)
        values[node.targets[0].id] = _literal(node.value, values)
    return values


def _literal(node: ast.expr, known: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        if node.id not in known:
            raise FormatError(f"name {node.id!r} is not a literal assigned above", file=UPSTREAM_FILE, line=node.lineno)
        return known[node.id]
    if isinstance(node, ast.Dict) and any(isinstance(v, ast.Name) for v in node.values):
        return {_literal(k, known): _literal(v, known) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise FormatError(f"not a literal: {exc}", file=UPSTREAM_FILE, line=node.lineno) from exc


def msbench_table_json(text: str) -> bytes:
    """The bytes of ``msbench/msbench.json`` (indent 1, no trailing newline, as in the shared data)."""
    values = read_assignments(text)
    missing = [var for var in KEYS.values() if var not in values]
    if missing:
        raise FormatError(f"variables {missing} not found", file=UPSTREAM_FILE)
    return json.dumps({key: values[var] for key, var in KEYS.items()}, indent=1).encode("utf-8")
