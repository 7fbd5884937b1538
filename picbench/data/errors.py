"""The named ways a data fetch fails. Each message says which source, URL, archive or file, and
what to do; none leaves a half-written file in the data layout."""

from __future__ import annotations

from picbench.errors import EnvironmentProblem, PicbenchError


class FetchError(PicbenchError):
    """A data fetch could not complete; the data root holds only files it had verified before."""


class DownloadInterruptedError(FetchError):
    """The connection broke or the body stopped short; the partial download is kept, a rerun resumes it."""


class DownloadHTTPError(FetchError):
    """The server answered with an HTTP error status."""


class NotAnArchiveError(FetchError):
    """What came back is not a tar.gz or zip archive (an HTML page from a mirror or a login wall)."""


class CorruptArchiveError(FetchError):
    """The archive does not decompress or ends early; it is deleted, a rerun downloads it afresh."""


class UnsafeArchiveError(FetchError):
    """An archive member escapes its folder (``../``, an absolute name) or is a link or device."""


class ChecksumMismatchError(FetchError):
    """A file's size or hash differs from the manifest shipped with picbench."""


class MissingFileError(FetchError):
    """A file the manifest lists is not in the source (archive, checkout or --from folder)."""


class DiskFullError(FetchError, EnvironmentProblem):
    """The file system holding the data root ran out of space (ENOSPC)."""


class ReadOnlyDataRootError(FetchError, EnvironmentProblem):
    """The data root (by default under ``$PICBENCH_HOME``) cannot be written."""
