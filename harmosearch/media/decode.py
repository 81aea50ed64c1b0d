"""Decoding one image file to RGB pixels, with EXIF orientation applied and one-line errors."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from harmosearch.errors import DataError

MAX_PIXELS = 100_000_000  # decompression-bomb guard: larger images are skipped
EXIF_ORIENTATION = 0x0112


def open_image(path: Path) -> Any:
    """Decode to RGB with EXIF orientation applied; one-line DataError on any failure."""
    return decode_image(path)[0]


def decode_image(path: Path, min_side: int | None = None) -> tuple[Any, int, int]:
    """(RGB image with EXIF orientation applied, full width, full height).

    With min_side, JPEGs are decoded at the smallest DCT scale that keeps both sides at least
    min_side pixels (Pillow's draft mode), which is several times faster for camera photos;
    the size returned is still the full, oriented size, the frame boxes are given in.

    Sizes above MAX_PIXELS are refused here, before any pixel is decoded; Pillow's own bomb
    check (a warning above its lower default limit, an error at twice that) is left as it is
    for the process, and its warning is ignored inside this call because the check above
    already decided.
    """
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise DataError(f"image is {width}x{height}, above the {MAX_PIXELS:,}-pixel limit")
                if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):
                    width, height = height, width
                if min_side and image.format == "JPEG":
                    image.draft("RGB", (min_side, min_side))
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image)), width, height
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError(f"image is larger than the {MAX_PIXELS:,}-pixel limit") from None
    except Exception as exc:  # Pillow raises many types for damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot decode image: {reason}") from None


def _to_rgb(image: Any) -> Any:
    """16-bit greyscale stretched to 8 bits; transparency composited on white."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((array / max(array.max(), 1) * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, image)
    return image.convert("RGB")
