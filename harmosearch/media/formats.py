"""Which files are photos or videos, and decoding any still to RGB pixels the right way up.

`open_still` decodes every still format and returns the pixels with the camera's orientation
applied, plus the full oriented size that an index gives boxes in:

- JPEG, PNG, WebP, BMP, GIF, TIFF and AVIF: Pillow. AVIF needs Pillow 11.3 or later, whose
  wheels carry libavif (pillow-heif dropped AVIF in its 1.0).
- HEIC/HEIF: pillow-heif's Pillow image class, constructed directly instead of registered.
  `pillow_heif.register_heif_opener()` would change what `PIL.Image.open` accepts for the
  whole process; the class alone needs no registration and is still a Pillow image with EXIF
  and draft mode (decoding an embedded thumbnail when it is large enough). libheif applies the
  HEIF rotation and mirroring itself and pillow-heif resets the EXIF orientation to 1, so the
  orientation is applied exactly once. Files are told apart by their `ftyp` brands, not their
  extension, so a HEIC saved as `.jpg` (as some exports do) still decodes.
- RAW: the JPEG preview that cameras embed (full size on most current cameras), found by
  walking the TIFF directories of TIFF-based RAWs (DNG, CR2, NEF, ARW, PEF, SRW, RW2, ORF ...)
  with Pillow's TIFF directory reader, or at the offset a Fujifilm RAF header gives. A file
  without such a preview of at least PREVIEW_MIN_SIDE pixels (CR3, for one) needs rawpy, the
  `harmosearch[raw]` extra: LibRaw reads every format's thumbnail and, failing that, demosaics
  the sensor data. Boxes of a RAW file are in pixels of the image decoded here, the preview's.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

from harmosearch.errors import DataError

MediaKind = Literal["still", "heif", "raw", "video"]

STILL_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif", ".avif"})
RAW_EXTENSIONS = frozenset(
    {
        ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
        ".rwl", ".pef", ".srw", ".3fr", ".erf", ".kdc", ".dcr", ".mos", ".mrw", ".x3f", ".iiq",
    }
)  # fmt: skip
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".3gp", ".mts", ".m2ts", ".mpg", ".mpeg", ".wmv"}
)
MEDIA_EXTENSIONS = STILL_EXTENSIONS | HEIF_EXTENSIONS | RAW_EXTENSIONS | VIDEO_EXTENSIONS

MAX_PIXELS = 100_000_000  # decompression-bomb guard: larger images are refused
PREVIEW_MIN_SIDE = 512  # a RAW's embedded JPEG smaller than this is a thumbnail, not a picture to index

ORIENTATION = 0x0112
EXIF_IFD, GPS_IFD = 0x8769, 0x8825


class UnsupportedFormat(DataError):
    """A file that needs an optional extra (or that no installed decoder reads)."""

    def __init__(self, message: str, extra: str | None = None) -> None:
        super().__init__(message)
        self.extra = extra


class Decoded(NamedTuple):
    image: Any  # PIL.Image.Image, RGB, orientation applied; smaller than width x height after a draft decode
    width: int  # full size, after orientation
    height: int


def media_kind(path: str | Path) -> MediaKind | None:
    """What a file is by its extension: "still", "heif" (HEIC/HEIF/AVIF), "raw", "video" or None."""
    suffix = Path(path).suffix.lower()
    if suffix in STILL_EXTENSIONS:
        return "still"
    if suffix in HEIF_EXTENSIONS:
        return "heif"
    if suffix in RAW_EXTENSIONS:
        return "raw"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def open_still(path: str | Path, min_side: int | None = None) -> Decoded:
    """(RGB image with its orientation applied, full width, full height) of any still.

    With min_side, JPEGs (a RAW's JPEG preview included) decode at the smallest DCT scale and
    HEIC files from the smallest embedded thumbnail that keep both sides at least min_side
    pixels, which is several times faster for camera photos; width and height are still the
    full oriented size. Raises UnsupportedFormat (naming the extra to install) or DataError,
    each with a one-line reason.
    """
    from PIL import Image

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # The size is checked below against MAX_PIXELS, without changing Pillow's global limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image, orientation = _open(path)
            with image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise DataError(f"image is {width}x{height}, above the {MAX_PIXELS:,}-pixel limit")
                if orientation in (5, 6, 7, 8):
                    width, height = height, width
                if min_side:
                    image.draft("RGB", (min_side, min_side))
                image.load()
                return Decoded(_to_rgb(apply_orientation(image, orientation)), width, height)
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError(f"image is larger than the {MAX_PIXELS:,}-pixel limit") from None
    except Exception as exc:  # decoders raise many types for damaged files
        raise DataError(f"cannot decode image: {_first_line(exc)}") from None


def apply_orientation(image: Any, orientation: int) -> Any:
    """The image turned as an EXIF orientation (1-8) says; other values leave it as is."""
    from PIL import Image

    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return image if method is None else image.transpose(method)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def _valid_orientation(value: Any) -> int:
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _open(path: Path) -> tuple[Any, int]:
    """A lazily decoding Pillow image of the file and the orientation still to apply to it."""
    from PIL import Image

    if media_kind(path) == "raw":
        return _open_raw(path)
    with path.open("rb") as fp:
        head = fp.read(64)
    if _is_hevc_heif(head):
        from pillow_heif import HeifImageFile

        image = HeifImageFile(str(path))
    else:
        image = Image.open(path)
    return image, _valid_orientation(image.getexif().get(ORIENTATION))


_HEVC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_AV1_BRANDS = frozenset({b"avif", b"avis"})


def _is_hevc_heif(head: bytes) -> bool:
    """An ISO-BMFF image whose brands say HEIF but not AVIF (AV1 in the same container is Pillow's)."""
    if head[4:8] != b"ftyp":
        return False
    end = min(int.from_bytes(head[:4], "big"), len(head))
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    return bool(brands & _HEVC_BRANDS) and not brands & _AV1_BRANDS


def _to_rgb(image: Any) -> Any:
    """An 8-bit RGB copy: 16-bit greys scaled to their maximum, transparency composited on white."""
    import numpy as np
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((array / max(array.max(), 1) * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, image)
    return image.convert("RGB")


# RAW files ------------------------------------------------------------------------------------

_SUB_IFDS, _JPEG_OFFSET, _JPEG_LENGTH, _RW2_JPEG = 330, 513, 514, 0x002E
_COMPRESSION, _PHOTOMETRIC, _STRIP_OFFSETS, _STRIP_BYTES = 259, 262, 273, 279
_JPEG_COMPRESSIONS = (6, 7)
_PREVIEW_PHOTOMETRICS = (2, 6)  # RGB and YCbCr: previews, never the sensor data (CFA, linear raw)
_MAX_DIRECTORIES = 64
_RAF_MAGIC = b"FUJIFILMCCD-RAW"
_LIBRAW_FLIP_TO_EXIF = {0: 1, 3: 3, 5: 8, 6: 6}


def _open_raw(path: Path) -> tuple[Any, int]:
    previews, orientation = embedded_previews(path)
    best = max(previews, key=lambda image: image.size[0] * image.size[1], default=None)
    for image in previews:
        if image is not best:
            image.close()
    if best is not None and min(best.size) >= PREVIEW_MIN_SIDE:
        return best, _valid_orientation(best.getexif().get(ORIENTATION, orientation))
    if best is not None:
        best.close()
    return _open_with_rawpy(path)


def embedded_previews(path: Path) -> tuple[list[Any], int]:
    """The JPEG previews embedded in a RAW file, as lazily decoding Pillow images, and the
    orientation the file's first TIFF directory gives (1 when it has none)."""
    from PIL import Image

    previews: list[Any] = []
    orientation = 1
    with Path(path).open("rb") as fp:
        if fp.read(len(_RAF_MAGIC)) == _RAF_MAGIC:
            # The RAF header gives the embedded JPEG's offset and length at byte 84, big-endian;
            # that JPEG carries the camera's EXIF, orientation included.
            fp.seek(84)
            offset, length = struct.unpack(">II", fp.read(8))
            blobs = [_read_span(fp, offset, length)]
        else:
            fp.seek(0)
            blobs = []
            for number, directory in enumerate(tiff_directories(fp)):
                if number == 0:
                    orientation = _valid_orientation(directory.get(ORIENTATION))
                blobs.extend(_preview_blobs(fp, directory))
    for blob in blobs:
        if not blob.startswith(b"\xff\xd8"):
            continue
        try:
            image = Image.open(io.BytesIO(blob))
        except Exception:  # a damaged preview is skipped; another may still decode
            continue
        if image.format == "JPEG":
            previews.append(image)
        else:
            image.close()
    return previews, orientation


def _preview_blobs(fp: IO[bytes], directory: Any) -> list[bytes]:
    blobs = []
    if _JPEG_OFFSET in directory and _JPEG_LENGTH in directory:
        blobs.append(_read_span(fp, _one(directory[_JPEG_OFFSET]), _one(directory[_JPEG_LENGTH])))
    if directory.get(_COMPRESSION) in _JPEG_COMPRESSIONS and directory.get(_PHOTOMETRIC) in _PREVIEW_PHOTOMETRICS:
        offsets, counts = _ints(directory.get(_STRIP_OFFSETS)), _ints(directory.get(_STRIP_BYTES))
        if len(offsets) == 1 and len(counts) == 1:
            blobs.append(_read_span(fp, offsets[0], counts[0]))
    embedded = directory.get(_RW2_JPEG)  # Panasonic's JpgFromRaw holds the JPEG itself
    if isinstance(embedded, bytes):
        blobs.append(embedded)
    return blobs


def tiff_directories(fp: IO[bytes]) -> Iterator[Any]:
    """Every image file directory of a TIFF-structured file: IFD0, its chain and the SubIFDs,
    breadth first, each a Pillow ImageFileDirectory_v2 (tag number -> value). Files whose magic
    number is not TIFF's but whose layout is (Olympus ORF, Panasonic RW2) are read too."""
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    head = fp.read(8)
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        return
    little = head[:2] == b"II"
    header = (b"II*\x00" if little else b"MM\x00*") + head[4:8]
    pending = [struct.unpack("<I" if little else ">I", head[4:8])[0]]
    seen: set[int] = set()
    while pending and len(seen) < _MAX_DIRECTORIES:
        offset = pending.pop(0)
        if offset <= 0 or offset in seen:
            continue
        seen.add(offset)
        directory = ImageFileDirectory_v2(header)
        fp.seek(offset)
        directory.load(fp)
        yield directory
        pending.extend(_ints(directory.get(_SUB_IFDS)))
        pending.append(directory.next)


def _read_span(fp: IO[bytes], offset: int, length: int) -> bytes:
    fp.seek(offset)
    return fp.read(length)


def _ints(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in value) if isinstance(value, tuple | list) else (int(value),)


def _one(value: Any) -> int:
    return _ints(value)[0]


def _open_with_rawpy(path: Path) -> tuple[Any, int]:
    from PIL import Image

    try:
        import rawpy
    except ImportError:
        raise UnsupportedFormat(
            f"{path.suffix.lower()} file without an embedded preview of at least {PREVIEW_MIN_SIDE} pixels; "
            "install harmosearch[raw] (rawpy) to decode it",
            extra="raw",
        ) from None
    with rawpy.imread(str(path)) as raw:
        flip = _LIBRAW_FLIP_TO_EXIF.get(raw.sizes.flip, 1)
        try:
            thumb = raw.extract_thumb()
        except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
            thumb = None
        if thumb is not None:
            if thumb.format == rawpy.ThumbFormat.JPEG:
                image = Image.open(io.BytesIO(thumb.data))
                orientation = image.getexif().get(ORIENTATION, flip)
            else:
                image, orientation = Image.fromarray(thumb.data), flip
            if min(image.size) >= PREVIEW_MIN_SIDE:
                return image, _valid_orientation(orientation)
            image.close()
        # postprocess turns the result as the camera's orientation says.
        return Image.fromarray(raw.postprocess(use_camera_wb=True, output_bps=8)), 1


# EXIF of any still --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExifData:
    """The EXIF tags of a still, as tag number -> value (Pillow's types: str, int, IFDRational)."""

    base: dict[int, Any] = field(default_factory=dict)  # IFD0: Make, Model, Orientation ...
    exif: dict[int, Any] = field(default_factory=dict)  # the Exif IFD: DateTimeOriginal, OffsetTimeOriginal ...
    gps: dict[int, Any] = field(default_factory=dict)  # the GPS IFD
    orientation: int | None = None  # as the camera wrote it, before any decoder applied it


def read_exif(path: str | Path) -> ExifData:
    """EXIF of any still that has it (an empty ExifData otherwise); DataError when unreadable."""
    from PIL import Image

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF it then reads anyway
            if media_kind(path) == "raw":
                return _raw_exif(path)
            image, _ = _open(path)
            with image:
                exif = image.getexif()
                base = dict(exif)
                orientation = image.info.get("original_orientation") or base.get(ORIENTATION)
                return ExifData(base, dict(exif.get_ifd(EXIF_IFD)), dict(exif.get_ifd(GPS_IFD)), orientation)
    except Image.DecompressionBombError:
        raise DataError(f"image is larger than the {MAX_PIXELS:,}-pixel limit") from None
    except Exception as exc:
        raise DataError(f"cannot read the metadata: {_first_line(exc)}") from None


def _raw_exif(path: Path) -> ExifData:
    from PIL import Image

    with path.open("rb") as fp:
        if fp.read(len(_RAF_MAGIC)) == _RAF_MAGIC:
            previews, _ = embedded_previews(path)
            if not previews:
                return ExifData()
            with previews[0] as preview:
                exif = preview.getexif()
                base = dict(exif)
                return ExifData(base, dict(exif.get_ifd(EXIF_IFD)), dict(exif.get_ifd(GPS_IFD)), base.get(ORIENTATION))
        fp.seek(0)
        head = fp.read(8)
        if head[:2] not in (b"II", b"MM"):
            return ExifData()
        exif = Image.Exif()
        exif.endian = "<" if head[:2] == b"II" else ">"
        exif.load_from_fp(fp, struct.unpack(exif.endian + "I", head[4:8])[0])
        base = dict(exif)
        return ExifData(base, dict(exif.get_ifd(EXIF_IFD)), dict(exif.get_ifd(GPS_IFD)), base.get(ORIENTATION))
