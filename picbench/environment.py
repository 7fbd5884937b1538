"""What belongs to the machine, not to a sample: the device, memory, disk. A run checks the device
before it loads anything, and an exception that is about the environment stops the run with a
clear message; it is never stored as a sample's outcome (a rerun on a good machine must not
reuse it as a finished generation)."""

from __future__ import annotations

import errno
import re

from picbench.errors import DeviceError, EnvironmentProblem, MissingExtraError

_DEVICE = re.compile(r"^(?P<type>[a-z]+)(?::(?P<index>\d+))?$")
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOMEM}
_ENVIRONMENT_MESSAGES = re.compile(
    r"out of memory|CUDA error|CUDA driver|no NVIDIA driver|NVIDIA driver on your system|not compiled with CUDA|"
    r"cuDNN error|CUBLAS_STATUS|device-side assert|MPS backend|No space left on device|Disk quota exceeded",
    re.IGNORECASE,
)


def check_device(device: str) -> str:
    """``device`` if this machine can run on it (cpu; cuda, cuda:N with a visible GPU N; mps
    where available), else :class:`DeviceError` saying what is wrong and what to pass instead."""
    match = _DEVICE.match(device.strip().lower()) if isinstance(device, str) else None
    if match is None or match["type"] not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {device!r} is not a device picbench runs on; use cpu, cuda, cuda:N or mps")
    kind, index = match["type"], int(match["index"]) if match["index"] is not None else None
    if kind == "cpu":
        if index not in (None, 0):
            raise DeviceError(f"--device {device!r}: there is one cpu device; use --device cpu")
        return device
    import torch

    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"--device {device}: Apple's MPS backend is not available on this machine; use --device cpu")
        return device
    if not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU (or NVIDIA driver) is visible"
        raise DeviceError(f"--device {device}: {why} on this machine; nothing was generated. Use --device cpu, or run where a GPU is")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise DeviceError(f"--device {device}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    return device


def environment_cause(exc: BaseException) -> str | None:
    """What about the machine ``exc`` reports (device, memory, disk), or None when it is about
    the input: a sample's failure is recorded, an environment's stops the run."""
    if isinstance(exc, EnvironmentProblem):
        return "the environment"
    if isinstance(exc, ImportError):  # a package missing here: an outcome computed without it must not be kept
        return f"a missing package ({exc.name or exc})"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
        return "out of accelerator memory"
    if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        return "the disk" if exc.errno != errno.ENOMEM else "out of memory"
    if _ENVIRONMENT_MESSAGES.search(str(exc)):
        return "the device, memory or disk"
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """Out of (accelerator) memory: worth retrying with a smaller batch before giving up."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


GENERATE_EXTRA = "generate"
GENERATE_MODULES = ("diffusers", "peft", "accelerate")
"""The import names of the ``generate`` extra's libraries (pyproject ``[project.optional-dependencies]``)."""


def require_extra(what: str, modules: tuple[str, ...] = GENERATE_MODULES, extra: str = GENERATE_EXTRA) -> None:
    """Import ``modules`` now, before any work, or raise :class:`MissingExtraError` naming ``what``
    needs them and the extra to install (an evaluation-only install lacks the generation stack)."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(what, extra, ", ".join(missing))
