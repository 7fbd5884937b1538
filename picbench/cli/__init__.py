"""Command-line interface: ``picbench VERB``. Importing a verb module registers its commands."""

from __future__ import annotations

from picbench.cli.app import app


def main() -> None:
    app()
