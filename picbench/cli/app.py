"""The root typer application; each verb group lives in its own module under picbench.cli."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="picbench",
    help="Benchmark position-controlled, identity-preserving multi-subject image customization.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)
