"""Image I/O that never lets a bad file pass silently: every image becomes upright RGB or an
:class:`ImageError` naming the file, whatever the decoder raised (Pillow's
``DecompressionBombError`` is not an ``OSError``)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from picbench.errors import ImageError


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
