"""The one error path of the CLI and the exit codes every verb uses.

======  =====================  ====================================================================
code    constant               meaning
======  =====================  ====================================================================
0       ``EXIT_OK``            done; ``regress``: nothing fell; ``validate``: no errors
1       ``EXIT_CHECK_FAILED``  the verb ran and its verdict is negative: ``regress`` found a
                               regression, ``validate`` found an error in the bench, ``run``
                               scored fewer items than asked (partial), ``regress`` or
                               ``compare`` cannot vouch for a candidate's coverage
2       ``EXIT_UNUSABLE``      the input cannot be used: an unknown name, a missing or malformed
                               file, a bad option value, missing weights, nothing to compare
                               (typer's own usage errors exit 2 as well)
130     ``EXIT_INTERRUPTED``   stopped by Ctrl-C; finished work is kept (``run``, ``train``,
                               ``data build bmpds``)
143     ``EXIT_TERMINATED``    stopped by SIGTERM (SLURM, Kubernetes, docker stop); finished work is
                               kept, rerun to resume (``run``, ``train``, ``data build bmpds``)
======  =====================  ====================================================================

The "Exit codes" section of docs/cli.md holds the same table; a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import typer
from rich.markup import escape

from picbench.cli.app import err_console

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process the signal killed
EXIT_CODES = {
    "EXIT_OK": EXIT_OK,
    "EXIT_CHECK_FAILED": EXIT_CHECK_FAILED,
    "EXIT_UNUSABLE": EXIT_UNUSABLE,
    "EXIT_INTERRUPTED": EXIT_INTERRUPTED,
    "EXIT_TERMINATED": EXIT_TERMINATED,
}


def fail(message: str | BaseException, code: int = EXIT_UNUSABLE) -> NoReturn:
    """Print ``error: MESSAGE`` on stderr (the message shown as written, never read as markup) and
    exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(str(message))}")
    raise typer.Exit(code)


def describe_os_error(exc: OSError) -> str:
    """A file-system error in words: the file, the reason, what to do."""
    import errno

    where = f"{exc.filename}: " if exc.filename else ""
    remedy = {
        errno.ENOSPC: "free space and rerun (finished work is kept)",
        errno.EDQUOT: "free space within the quota and rerun (finished work is kept)",
        errno.EFBIG: "the file-size limit (ulimit -f) stopped the write; raise it and rerun (finished work is kept)",
        errno.EROFS: "the file system is read-only; choose a writable folder",
        errno.EACCES: "no permission; choose a folder you can write",
        errno.ENOTDIR: "a path that should be a folder is a file",
    }.get(exc.errno or 0, "")
    return f"{where}{exc.strerror or exc}" + (f"; {remedy}" if remedy else "")


def guarded(app: Callable[[], object]) -> None:
    """Run the console script with one guard beyond the verbs' own: a file-system error no verb
    foresaw (a full disk, a file-size limit, a read-only or misnamed folder), or a picbench error a
    verb let through (a misnamed ``$PICBENCH_HOME``), ends with its message and exit 2, not a
    traceback; what was finished is on disk already (every write is atomic)."""
    from picbench.errors import PicbenchError

    try:
        app()
    except (OSError, PicbenchError) as exc:
        message = str(exc) if isinstance(exc, PicbenchError) else describe_os_error(exc)
        err_console.print(f"[bold red]error:[/] {escape(message)}")
        raise SystemExit(EXIT_UNUSABLE) from None


def warn(message: str | BaseException) -> None:
    """Print ``warning: MESSAGE`` on stderr; the verb goes on."""
    err_console.print(f"[bold yellow]warning:[/] {escape(str(message))}")
