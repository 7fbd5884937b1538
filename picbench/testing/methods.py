"""The method suite: what the runner relies on, checked the same way for every method on real
DreamBench references with tiny random-weight models.

- images have each sample's size (or its aspect ratio, for a method with ``exact_size = False``);
- the same (sample, seed) gives the same image whatever the batch it comes in, and another seed
  another image (unless the method declares ``seeded = False``);
- offline with no weights, loading fails with a MissingWeightsError naming a checkpoint;
- an unknown parameter is refused when the method is built; smoke parameters are declared ones,
  and explicit parameters win over them;
- the dtype: float32 on CPU and in smoke runs, the method's ``cuda_dtype`` on CUDA.
``params`` everywhere are parameters the method is built with (a shorter schedule, the ``images``
method's folder); a key given there is not checked as a smoke default."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from picbench.errors import MissingWeightsError
from picbench.methods import METHODS, Method
from picbench.methods.base import same_aspect
from picbench.records import Sample
from picbench.testing.offline import offline
from picbench.testing.registries import require, resolve
from picbench.testing.samples import conformance_samples, data_root


@dataclass(frozen=True)
class Generated:
    """One method's images: both samples in one batch at seed 0, each alone at seed 0, the first at seed 1."""

    method: Method
    label: str
    samples: list[Sample]
    batch: list[Image.Image]
    alone: list[Image.Image]
    other_seed: Image.Image


def method_class(entry: str | type[Method]) -> tuple[type[Method], str]:
    _, cls, label = resolve(METHODS, entry)
    require(isinstance(cls, type) and issubclass(cls, Method), label, "is not a Method subclass")
    return cls, label


def build(cls: type[Method], params: Mapping[str, Any] | None = None, *, extra: Mapping[str, Any] | None = None, **kwargs: Any) -> Method:
    """The method built with ``params``, overridden by ``extra``."""
    return cls(params={**(params or {}), **(extra or {})}, **kwargs)


def generate_all(entry: str | type[Method], root: Path | None = None, params: Mapping[str, Any] | None = None) -> Generated:
    cls, label = method_class(entry)
    method = build(cls, params, models="tiny")
    samples = [s for s in conformance_samples() if method.supports(s) is None]
    require(bool(samples), label, "serves none of the conformance samples")
    root = data_root(root)
    return Generated(
        method,
        label,
        samples,
        method.generate(samples, seed=0, data_root=root),
        [method.generate([s], seed=0, data_root=root)[0] for s in samples],
        method.generate(samples[:1], seed=1, data_root=root)[0],
    )


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def check_sizes(generated: Generated) -> None:
    method, samples, batch, label = generated.method, generated.samples, generated.batch, generated.label
    require(len(batch) == len(samples), label, f"returned {len(batch)} images for {len(samples)} samples")
    for sample, image in zip(samples, batch):
        target = (sample.width, sample.height)
        fits = image.size == target or (not method.exact_size and same_aspect(image.size, target))
        require(fits, label, f"sample {sample.id}: image {image.size}, the sample is {target} (exact_size={method.exact_size})")


def check_batch_independent(generated: Generated) -> None:
    for sample, in_batch, alone in zip(generated.samples, generated.batch, generated.alone):
        require(
            np.array_equal(pixels(in_batch), pixels(alone)), generated.label, f"sample {sample.id}: seed 0 differs in a batch and alone"
        )


def check_seeds(generated: Generated) -> None:
    same = np.array_equal(pixels(generated.batch[0]), pixels(generated.other_seed))
    seeded = generated.method.seeded
    require(same is (not seeded), generated.label, f"seeds 0 and 1 give {'the same' if same else 'different'} images, but seeded={seeded}")


def check_offline_error(entry: str | type[Method], tmp: Path, params: Mapping[str, Any] | None = None) -> None:
    cls, label = method_class(entry)
    with offline(tmp / "empty-cache"):
        method = build(cls, params, weights_dir=tmp / "no-weights")
        try:
            method.load()
        except NotImplementedError as exc:  # nothing to load: it runs offline as it is
            require(not method.checkpoints and "no networks" in str(exc), label, f"load() raised NotImplementedError: {exc}")
            return
        except MissingWeightsError as exc:
            named = [c.split(" ")[0] for c in method.checkpoints.values()]
            require(any(c in str(exc) for c in named), label, f"the missing-weights error {str(exc)!r} names none of {named}")
            require(not method.loaded, label, "counts as loaded after failing to load")
            return
        raise AssertionError(f"{label}: load() offline with no weights did not fail (checkpoints: {dict(method.checkpoints)})")


def check_unknown_parameter(entry: str | type[Method], params: Mapping[str, Any] | None = None) -> None:
    cls, label = method_class(entry)
    try:
        build(cls, params, models="tiny", extra={"no_such_parameter": 1})
    except ValueError as exc:
        require("unknown parameter(s) ['no_such_parameter']" in str(exc), label, f"the refusal {str(exc)!r} does not name the parameter")
        return
    raise AssertionError(f"{label}: an unknown parameter 'no_such_parameter' was accepted")


def check_smoke_params(entry: str | type[Method], params: Mapping[str, Any] | None = None) -> None:
    cls, label = method_class(entry)
    undeclared = sorted(set(cls.smoke_params) - set(cls.default_params))
    require(not undeclared, label, f"smoke parameters {undeclared} are not in default_params")
    smoke, full = build(cls, params, models="tiny"), build(cls, params)
    for key, value in cls.smoke_params.items():
        if key in (params or {}):
            continue
        require(smoke.params[key] == value, label, f"smoke run: {key}={smoke.params[key]!r}, smoke_params says {value!r}")
        require(full.params[key] == cls.default_params[key], label, f"full run: {key}={full.params[key]!r}, not the default")
        explicit = build(cls, params, models="tiny", extra={key: cls.default_params[key]}).params[key]
        require(explicit == cls.default_params[key], label, f"an explicit {key} does not win over the smoke default")


def check_dtype(entry: str | type[Method], params: Mapping[str, Any] | None = None) -> None:
    import torch

    cls, label = method_class(entry)
    cuda = getattr(torch, cls.cuda_dtype, None)
    require(isinstance(cuda, torch.dtype), label, f"cuda_dtype {cls.cuda_dtype!r} is not a torch dtype name")
    for device, models, expected in (("cuda:1", "default", cuda), ("cpu", "default", torch.float32), ("cuda", "tiny", torch.float32)):
        got = build(cls, params, device=device, models=models).dtype  # built, not loaded: no GPU needed
        require(got == expected, label, f"dtype on {device} ({models} models) is {got}, expected {expected}")


def check_method(entry: str | type[Method], root: Path | None = None, params: Mapping[str, Any] | None = None) -> None:
    """Every check of the method suite on one method (``params``: see the module docstring)."""
    generated = generate_all(entry, root, params)
    check_sizes(generated)
    check_batch_independent(generated)
    check_seeds(generated)
    with tempfile.TemporaryDirectory(prefix="picbench-conformance-") as tmp:
        check_offline_error(entry, Path(tmp), params)
    check_unknown_parameter(entry, params)
    check_smoke_params(entry, params)
    check_dtype(entry, params)
