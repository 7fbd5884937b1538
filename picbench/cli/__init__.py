"""Command-line interface: ``picbench VERB``. Importing a verb module registers its commands."""

from __future__ import annotations

import picbench.cli.bench  # noqa: F401
import picbench.cli.compare  # noqa: F401
import picbench.cli.data  # noqa: F401
import picbench.cli.leaderboard  # noqa: F401
import picbench.cli.ls  # noqa: F401
import picbench.cli.regress  # noqa: F401
import picbench.cli.report  # noqa: F401
import picbench.cli.run  # noqa: F401
import picbench.cli.train  # noqa: F401
import picbench.cli.validate  # noqa: F401
import picbench.cli.weights  # noqa: F401
from picbench.cli.app import app, err_console
from picbench.cli.errors import EXIT_UNUSABLE, describe_os_error
from picbench.errors import PicbenchError


def main() -> None:
    """The console script. Its one guard beyond the verbs' own: a file-system error no verb
    foresaw (a full disk, a file-size limit, a read-only or misnamed folder), or a picbench error a
    verb let through (a misnamed ``$PICBENCH_HOME``), ends with its message and exit 2, not a
    traceback; what was finished is on disk already (every write is atomic)."""
    from rich.markup import escape

    try:
        app()
    except (OSError, PicbenchError) as exc:
        message = describe_os_error(exc) if isinstance(exc, OSError) and not isinstance(exc, PicbenchError) else str(exc)
        err_console.print(f"[bold red]error:[/] {escape(message)}")
        raise SystemExit(EXIT_UNUSABLE) from None
