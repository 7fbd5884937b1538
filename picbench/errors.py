"""Error types that name what is wrong and where (file, line, sample, field)."""

from __future__ import annotations

from pathlib import Path


class PicbenchError(Exception):
    """Base class of every error picbench raises on purpose."""


class FormatError(PicbenchError, ValueError):
    """A file picbench reads, or a record inside it, is malformed; the message names where."""

    code: str | None = None  # the rule's stable code (e.g. ``bad-box``) where a record rule raised

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        sample_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.line, self.sample_id, self.field = file, line, sample_id, field
        where = []
        if file is not None:
            where.append(f"{file}" + (f":{line}" if line is not None else ""))
        if sample_id is not None:
            where.append(f"sample {sample_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        self.reason = message
        super().__init__((", ".join(where) + ": " if where else "") + message)


class ConfigError(FormatError):
    """A config file (TOML) that cannot be used; ``field`` is the table and key (``stages[1].lr``,
    ``filter.keep_top``), which also starts the reason: ``FILE, field 'stages[1].lr': stages[1].lr
    must be float, got 'x'`` reads whole when quoted alone."""

    def __init__(self, message: str, *, file: str | Path | None = None, field: str | None = None) -> None:
        super().__init__(f"{field} {message}" if field else message, file=file, field=field)


class BenchFormatError(FormatError):
    """A bench file or a record inside it is malformed."""


class ResultFormatError(FormatError):
    """A results file, samples line or leaderboard CSV is malformed."""


class EnvironmentProblem(PicbenchError):
    """Something about the machine, not a sample, stops the run: the device, missing weights,
    memory, disk. It ends the run with a clear message and is never stored as a sample's outcome."""


class DeviceError(EnvironmentProblem):
    """The requested device is unknown or not usable on this machine."""


class ImageError(PicbenchError, OSError):
    """An image is missing, truncated, corrupt or undecodable."""


class UnsafePathError(PicbenchError, ValueError):
    """A bench path is absolute or escapes its data root."""


class MissingWeightsError(EnvironmentProblem, FileNotFoundError):
    """Model weights are not available locally and the hub cannot be reached."""


class UnknownNameError(PicbenchError, KeyError):
    """A registry lookup failed; the message carries a 'did you mean' suggestion."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingExtraError(EnvironmentProblem, ImportError):
    """An optional group of dependencies (a pip extra) is not installed; the message names what
    needs it, what is missing and the extra that installs it. A problem of the machine: a run
    stops on it, and records nothing as a sample's outcome."""

    def __init__(self, purpose: str, extra: str, missing: ImportError | str) -> None:
        names = (missing.name or str(missing)) if isinstance(missing, ImportError) else missing
        super().__init__(
            f"{purpose} needs the '{extra}' extra, which is not installed here (missing: {names}); "
            f"install it with: pip install 'picbench[{extra}]'"
        )
