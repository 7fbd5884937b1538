"""The method suite (:mod:`picbench.testing.methods`) over every registered method: the checks
live in the package, so plug-in authors run the same ones; this file runs them on picbench's
registry with a shorter schedule where the smoke defaults keep the full one, and pins each
built-in method's CUDA dtype. Per-method tests keep what is particular to each method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from grounded_samples import _one_thread  # noqa: F401 (autouse fixture)

from picbench.methods import METHODS
from picbench.testing import methods as suite
from picbench.testing.samples import write_sample_images

NAMES = METHODS.names()
# a shorter schedule for the methods whose smoke defaults keep the full one (FLUX: 25 steps)
FAST: dict[str, dict[str, Any]] = {"positionic": {"steps": 2, "ref_long_side": 32}, "uno": {"steps": 2, "ref_long_side": 32}}
# the CUDA dtype of each built-in method, as its authors release and run it
CUDA_DTYPES = {
    "gligen": "float16",
    "instancediffusion": "float16",
    "msdiffusion": "float16",
    "dreamo": "bfloat16",
    "positionic": "bfloat16",
    "uno": "bfloat16",
    "paste": "float32",
    "images": "float32",
}


def _params(name: str, tmp: Path) -> dict[str, Any]:
    params = dict(FAST.get(name, {}))
    if name == "images":
        params["dir"] = str(write_sample_images(tmp / "images"))
    return params


@pytest.fixture(scope="module", params=NAMES)
def generated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> suite.Generated:
    """Each method's images, once per module."""
    name = request.param
    return suite.generate_all(name, data_dir, _params(name, tmp_path_factory.mktemp(name)))


def test_one_image_per_sample_of_its_size(generated: suite.Generated) -> None:
    suite.check_sizes(generated)


def test_same_seed_same_image_whatever_the_batch(generated: suite.Generated) -> None:
    suite.check_batch_independent(generated)


def test_another_seed_another_image_unless_unseeded(generated: suite.Generated) -> None:
    suite.check_seeds(generated)


@pytest.mark.parametrize("name", NAMES)
def test_offline_without_weights_the_error_names_a_checkpoint(name: str, tmp_path: Path) -> None:
    suite.check_offline_error(name, tmp_path, _params(name, tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_is_refused(name: str, tmp_path: Path) -> None:
    suite.check_unknown_parameter(name, _params(name, tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_smoke_parameters_are_declared_and_explicit_ones_win(name: str, tmp_path: Path) -> None:
    suite.check_smoke_params(name, _params(name, tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_dtype_is_float32_off_cuda_and_in_smoke_runs(name: str, tmp_path: Path) -> None:
    assert METHODS.get(name).cuda_dtype == CUDA_DTYPES[name]
    suite.check_dtype(name, _params(name, tmp_path))


@pytest.mark.parametrize("check", [suite.check_unknown_parameter, suite.check_smoke_params, suite.check_dtype])
def test_a_broken_method_fails_the_suite_naming_it(check: Any) -> None:
    from picbench.methods.paste import PasteMethod

    class Sloppy(PasteMethod):
        """Accepts any parameter, smoke default undeclared, cuda dtype misspelt."""

        name = "sloppy"
        smoke_params = {"undeclared": 1}
        cuda_dtype = "float17"

        def __init__(self, **kwargs: Any) -> None:
            kwargs["params"] = {k: v for k, v in (kwargs.get("params") or {}).items() if k in self.default_params}
            super().__init__(**kwargs)

    with pytest.raises(AssertionError, match=r"^method 'sloppy' \(test_method_conformance:.*Sloppy\): "):
        check(Sloppy)
