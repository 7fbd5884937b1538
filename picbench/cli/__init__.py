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
from picbench.cli.app import app
from picbench.cli.errors import guarded


def main() -> None:
    guarded(app)
