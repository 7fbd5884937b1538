"""The built-in `paste` and `images` methods, and third-party methods found through entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from run_bench_helpers import BACKPACK, CAT, DOG, tiny_samples

from picbench.errors import ImageError, UnknownNameError
from picbench.imaging import load_rgb
from picbench.methods import METHODS
from picbench.records import Sample, Subject


def _box_px(box, w, h):
    return round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)


def _expected_patch(data_dir: Path, ref: str, box, w: int, h: int) -> np.ndarray:
    x0, y0, x1, y1 = _box_px(box, w, h)
    return np.asarray(load_rgb(data_dir / ref).resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC))


def test_paste_puts_each_reference_in_its_box_front_most_last(data_dir: Path) -> None:
    paste = METHODS.get("paste")()
    sample = tiny_samples(2, size=96)[1]  # backpack behind (depth 1), cat in front (depth 0), overlapping
    (image,) = paste.generate([sample], seed=0, data_root=data_dir)
    assert image.size == (96, 96) and image.mode == "RGB"
    pixels = np.asarray(image)
    backpack, cat = sample.subjects
    cx0, cy0, cx1, cy1 = _box_px(cat.box, 96, 96)
    np.testing.assert_array_equal(pixels[cy0:cy1, cx0:cx1], _expected_patch(data_dir, CAT, cat.box, 96, 96))
    bx0, by0, bx1, by1 = _box_px(backpack.box, 96, 96)
    expected_backpack = _expected_patch(data_dir, BACKPACK, backpack.box, 96, 96)
    # where the cat does not cover it, the backpack shows
    np.testing.assert_array_equal(pixels[by0:cy0, bx0:bx1], expected_backpack[: cy0 - by0])
    # outside every box: the plain background
    assert tuple(pixels[95, 0]) == (127, 127, 127) and tuple(pixels[0, 95]) == (127, 127, 127)


def test_paste_depth_order_decides_who_covers_the_overlap(data_dir: Path) -> None:
    sample = tiny_samples(2, size=96)[1]
    backpack, cat = sample.subjects
    swapped = Sample(
        sample.id,
        sample.prompt,
        96,
        96,
        "multi",
        (
            Subject(backpack.name, backpack.class_word, backpack.references, box=backpack.box, depth=0),
            Subject(cat.name, cat.class_word, cat.references, box=cat.box, depth=1),
        ),
    )
    pixels = np.asarray(METHODS.get("paste")().generate([swapped], 0, data_dir)[0])
    bx0, by0, bx1, by1 = _box_px(backpack.box, 96, 96)
    np.testing.assert_array_equal(pixels[by0:by1, bx0:bx1], _expected_patch(data_dir, BACKPACK, backpack.box, 96, 96))


def test_paste_without_boxes_uses_columns_and_contain_keeps_aspect(data_dir: Path) -> None:
    sample = Sample("nobox", "a dog and a cat", 80, 40, "multi", (Subject("dog", "dog", (DOG,)), Subject("cat", "cat", (CAT,))))
    pixels = np.asarray(METHODS.get("paste")().generate([sample], 0, data_dir)[0])
    np.testing.assert_array_equal(pixels[:, :40], _expected_patch(data_dir, DOG, (0, 0, 0.5, 1), 80, 40))
    np.testing.assert_array_equal(pixels[:, 40:], _expected_patch(data_dir, CAT, (0.5, 0, 1, 1), 80, 40))
    contained = np.asarray(METHODS.get("paste")(params={"fit": "contain", "background": "white"}).generate([sample], 0, data_dir)[0])
    # square references in 40x40 columns fill them; in a wide single box they would be letterboxed
    wide = Sample("wide", "a dog", 80, 40, "single", (Subject("dog", "dog", (DOG,), box=(0.0, 0.0, 1.0, 1.0)),))
    letterboxed = np.asarray(METHODS.get("paste")(params={"fit": "contain", "background": "white"}).generate([wide], 0, data_dir)[0])
    assert (letterboxed[:, :20] == 255).all() and (letterboxed[:, 60:] == 255).all()
    assert not (letterboxed[:, 20:60] == 255).all()
    assert contained.shape == (40, 80, 3)


def test_paste_rejects_bad_parameters() -> None:
    paste = METHODS.get("paste")
    with pytest.raises(ValueError, match="not a colour"):
        paste(params={"background": "no-such-colour"})
    with pytest.raises(ValueError, match="fit must be"):
        paste(params={"fit": "crop"})


def _write_images_folder(folder: Path, samples: list[Sample], seed: int, colour=(10, 200, 30)) -> None:
    for s in samples:
        path = folder / f"seed{seed}" / f"{s.id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (s.width, s.height), colour).save(path)


def test_images_reads_the_documented_layout(tmp_path: Path, data_dir: Path) -> None:
    samples = tiny_samples(3)
    _write_images_folder(tmp_path / "gens", samples, seed=1)
    method = METHODS.get("images")(params={"dir": str(tmp_path / "gens")})
    images = method.generate(samples, seed=1, data_root=data_dir)
    assert [im.size for im in images] == [(64, 64)] * 3
    assert tuple(np.asarray(images[2])[5, 5]) == (10, 200, 30)
    with pytest.raises(ImageError, match=r"seed0.*s00\.png"):
        method.generate(samples[:1], seed=0, data_root=data_dir)


def test_images_ambiguous_resize_and_cache_key(tmp_path: Path, data_dir: Path) -> None:
    samples = tiny_samples(1)
    folder = tmp_path / "gens"
    (folder / "seed0").mkdir(parents=True)
    Image.new("RGB", (128, 128), "red").save(folder / "seed0" / "s00.jpg")
    plain = METHODS.get("images")(params={"dir": str(folder)})
    assert plain.generate(samples, 0, data_dir)[0].size == (128, 128)  # same aspect: kept at its own size
    resized = METHODS.get("images")(params={"dir": str(folder), "resize": True})
    assert resized.generate(samples, 0, data_dir)[0].size == (64, 64)
    Image.new("RGB", (128, 96), "red").save(folder / "seed0" / "s00.jpg")
    for method in (plain, resized):
        with pytest.raises(
            ImageError, match=r"sample 's00' seed 0: .*s00\.jpg is 128x96, the bench's sample is 64x64: another aspect ratio"
        ):
            method.generate(samples, 0, data_dir)
    key_before = (plain.cache_params(), plain.item_params(samples[0], 0))
    assert key_before[1]["image"] == "seed0/s00.jpg" and key_before[1]["size"] == (folder / "seed0" / "s00.jpg").stat().st_size
    (folder / "seed0" / "notes.txt").write_text("a stray file")
    (folder / "seed1").mkdir()
    Image.new("RGB", (64, 64), "blue").save(folder / "seed1" / "s00.png")  # another seed's image
    assert (plain.cache_params(), plain.item_params(samples[0], 0)) == key_before  # files no item reads change no key
    Image.new("RGB", (64, 64), "blue").save(folder / "seed0" / "s00.png")
    assert plain.cache_params() == key_before[0] and plain.item_params(samples[0], 0) != key_before[1]
    assert "several images" in plain.item_params(samples[0], 0)["problem"]
    with pytest.raises(ImageError, match="several images"):
        plain.generate(samples, 0, data_dir)
    with pytest.raises(ValueError, match="needs --param dir"):
        METHODS.get("images")()


def test_images_run_scores_twice_the_bench_size_and_names_an_aspect_mismatch(tmp_path: Path, data_dir: Path) -> None:
    """`picbench run --method images` on paste's images upscaled 2x: scored at their own size
    (recorded per sample), with one image of another aspect ratio failing by name."""
    from run_bench_helpers import write_tiny_bench
    from typer.testing import CliRunner

    from picbench.cli import app
    from picbench.results import iter_sample_scores, load_result

    bench = write_tiny_bench(tmp_path, data_dir, n=3)
    common = ["--bench", str(bench), "--data-dir", str(data_dir), "--models", "tiny", "--detector", "none"]
    assert CliRunner().invoke(app, ["run", "--method", "paste", *common, "--out", str(tmp_path / "paste")]).exit_code == 0
    folder = tmp_path / "gens" / "seed0"
    folder.mkdir(parents=True)
    for score, image in iter_sample_scores(tmp_path / "paste"):
        big = load_rgb(tmp_path / "paste" / image)
        big = big.resize((big.width * 2, big.height * 2 - (score.sample_id == "s02") * 32), Image.Resampling.BICUBIC)  # s02: 128x96
        big.save(folder / f"{score.sample_id}.png")
    result = CliRunner().invoke(
        app,
        ["run", "--method", "images", "--param", f"dir={tmp_path / 'gens'}", *common, "--out", str(tmp_path / "images"), "--allow-partial"],
    )
    assert result.exit_code == 0, result.output
    scored = load_result(tmp_path / "images")
    assert scored.counts["generation_failures"] == 1 and scored.metrics["clip_i"] is not None
    lines = [json.loads(line) for line in (tmp_path / "images" / "samples.jsonl").read_text().splitlines()]
    by_id = {line["sample_id"]: line for line in lines}
    assert sorted(by_id) == ["m01", "s00", "s02"]
    assert by_id["s00"]["image_size"] == by_id["m01"]["image_size"] == [128, 128]
    assert by_id["s00"]["metrics"]["clip_i"] is not None and by_id["m01"]["metrics"]["clip_i_crop"] is not None
    assert by_id["s02"]["image_size"] is None
    assert "sample 's02'" in by_id["s02"]["generation_failure"] and "128x96" in by_id["s02"]["generation_failure"]
    assert "64x64" in by_id["s02"]["generation_failure"]


def test_unknown_method_gets_a_suggestion() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'paste'"):
        METHODS.get("pastee")


def test_a_third_party_method_is_found_through_its_entry_point(tmp_path: Path) -> None:
    """A fake installed distribution (a dist-info folder on sys.path) declares a method in the
    `picbench.methods` group; picbench lists and loads it without being edited."""
    (tmp_path / "fancy_plugin.py").write_text(
        textwrap.dedent("""
        from picbench.methods.paste import PasteMethod

        class FancyMethod(PasteMethod):
            name = "fancy"
    """)
    )
    dist = tmp_path / "fancy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[picbench.methods]\nfancy = fancy_plugin:FancyMethod\n")
    code = "from picbench.methods import METHODS; cls = METHODS.get('fancy'); print(cls.__name__, 'fancy' in METHODS.names(), next(e.summary for e in METHODS.entries() if e.name == 'fancy'))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["FancyMethod", "True", "plugin", "from", "fancy-plugin"]


def test_adding_one_image_to_a_scored_folder_scores_only_that_image(tmp_path: Path, data_dir: Path) -> None:
    """The `images` method keys each item by its own file: a run over a folder lacking one image
    fails that item; adding the image generates (reads) and scores that one item alone, and a
    stray file changes nothing (counted by the runner from the store)."""
    from run_bench_helpers import write_tiny_bench

    from picbench.runner import RunConfig, run

    samples = tiny_samples(4)
    bench = write_tiny_bench(tmp_path, data_dir, samples=samples)
    folder = tmp_path / "gens"
    _write_images_folder(folder, samples[:3], seed=0)
    config = RunConfig(
        method="images", bench=str(bench), out=tmp_path / "run", data_dir=data_dir, models="tiny", detector=None,
        metrics=("clip_i", "dino"), params={"dir": str(folder)},
    )  # fmt: skip
    first = run(config)
    assert (first.generated, first.generation_failures, first.scored) == (4, 1, 4)
    _write_images_folder(folder, samples[3:], seed=0)
    added = run(config)
    assert (added.generated, added.generation_reused, added.scored, added.score_reused) == (1, 3, 1, 3)
    assert added.result is not None and added.result.counts["generation_failures"] == 0
    (folder / "seed0" / "stray.png").write_bytes((folder / "seed0" / "s00.png").read_bytes())
    (folder / "README.txt").write_text("not an image")
    again = run(config)
    assert (again.generated, again.scored, again.score_reused) == (0, 0, 4)
    _write_images_folder(folder, samples[1:2], seed=0, colour=(200, 10, 30))  # one image replaced
    replaced = run(config)
    assert (replaced.generated, replaced.scored) == (1, 1)
