"""Images in and out of picbench.

Reading never lets a bad file pass silently: every image becomes upright RGB or an
:class:`ImageError` naming the file, whatever the decoder raised (Pillow's
``DecompressionBombError`` is not an ``OSError``). Compositing pastes a sample's subjects into
their boxes back to front, the one drawing order of the ``paste`` method, the paste-pairs builder
and BMPDS's placement.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from picbench.errors import ImageError
from picbench.paths import resolve_in_root
from picbench.records import BoxXYXY, Sample, Subject

FITS = ("stretch", "contain")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode fully (so truncation is caught now, not later), apply EXIF orientation, and convert
    grayscale, palette, RGBA (onto white), CMYK and 16-bit images to 8-bit RGB."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # in place: a 2048 px RGB image is not copied twice
            return im if im.mode == "RGB" else to_rgb(im)
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"image {path} is larger than Pillow's pixel limit ({exc}); raise PIL.Image.MAX_IMAGE_PIXELS if it is genuine"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image {path} is corrupt or truncated: {exc}") from exc
    except MemoryError:
        raise  # the machine's problem, not the image's
    except Exception as exc:  # whatever else a decoder raises is this image's problem, never a crash
        raise ImageError(f"image {path} cannot be decoded ({type(exc).__name__}: {exc})") from exc


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited onto white."""
    if im.mode == "RGB":
        return im.copy()
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 256).convert("L")
    return im.convert("RGB")


def paste_subjects(
    canvas: Image.Image, sample: Sample, data_root: Path, *, fit: str = "stretch", load: Callable[[Path], Image.Image] = load_rgb
) -> Image.Image:
    """Paste each subject's first reference into its box on ``canvas`` (the sample's size), back
    to front: ``fit="stretch"`` resizes it to the box, ``"contain"`` keeps its aspect, centred.
    The ``paste`` method draws on a plain canvas, the paste-pairs builder on a scene."""
    for subject, box in back_to_front(sample):
        x0, y0, x1, y1 = (
            round(box[0] * sample.width),
            round(box[1] * sample.height),
            round(box[2] * sample.width),
            round(box[3] * sample.height),
        )
        w, h = max(1, x1 - x0), max(1, y1 - y0)
        ref = load(resolve_in_root(data_root, subject.references[0]))
        if fit == "stretch":
            canvas.paste(ref.resize((w, h), Image.Resampling.BICUBIC), (x0, y0))
        else:
            scale = min(w / ref.width, h / ref.height)
            fitted = ref.resize((max(1, round(ref.width * scale)), max(1, round(ref.height * scale))), Image.Resampling.BICUBIC)
            canvas.paste(fitted, (x0 + (w - fitted.width) // 2, y0 + (h - fitted.height) // 2))
    return canvas


def back_to_front(sample: Sample) -> list[tuple[Subject, BoxXYXY]]:
    """(subject, box) from the largest depth rank to rank 0; unranked subjects last, in list order."""
    sample = sample.with_fallback_layout()
    order = sorted(range(len(sample.subjects)), key=lambda i: (sample.subjects[i].depth is None, -(sample.subjects[i].depth or 0), i))
    return [(sample.subjects[i], sample.subjects[i].box) for i in order]  # type: ignore[misc]
