"""The root typer application; each verb group lives in its own module under picbench.cli."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console, ConsoleDimensions

import picbench

UNWRAPPED_WIDTH = 100_000
"""The layout width outside a terminal: every table as wide as its content, no cell wrapped."""


class LogConsole(Console):
    """A rich console that, writing to a pipe, a file or a CI log rather than a terminal, lays out
    every table as wide as its content, so no cell is ever wrapped (rich would wrap at 80 columns);
    in a terminal it fits the terminal as usual."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(UNWRAPPED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


app = typer.Typer(
    name="picbench",
    help="Benchmark position-controlled, identity-preserving multi-subject image customization.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = LogConsole()
err_console = LogConsole(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"picbench {picbench.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show third-party libraries' warnings, logs and progress bars (hidden by default)")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print picbench's version and exit")
    ] = False,
) -> None:
    """Benchmark position-controlled, identity-preserving multi-subject image customization."""
    from picbench.cli.quiet import quiet_third_party

    if not verbose:
        quiet_third_party()
