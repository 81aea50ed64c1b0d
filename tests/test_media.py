"""Media: every still format decoded the right way up, RAW previews, metadata, dates for the
filters, and what is not a photo (videos: tests/test_video.py). Every fixture is built here."""

import io
import os
import struct
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image, TiffImagePlugin

from harmosearch.errors import ConfigError, DataError, QueryError
from harmosearch.media.formats import (
    MAX_PIXELS,
    PREVIEW_MIN_SIDE,
    UnsupportedFormat,
    media_kind,
    open_still,
    read_exif,
)
from harmosearch.media.ignore import IGNORE_FILE, IgnoreRules
from harmosearch.media.metadata import date_range, exif_time, iso6709, parse_date, period, read_metadata

RED, BLUE = (220, 30, 30), (30, 40, 220)


def two_halves(width, height, left=RED, right=BLUE):
    """Left half one colour, right half another: shows which way a picture was turned."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2] = left
    a[:, width // 2 :] = right
    return Image.fromarray(a)


def close(pixel, colour, tolerance=30):
    return all(abs(int(p) - c) <= tolerance for p, c in zip(pixel, colour, strict=True))


def turned_right(image):
    """What orientation 6 shows for a two_halves picture: red on top, blue at the bottom."""
    a = np.asarray(image)
    return close(a[2, a.shape[1] // 2], RED) and close(a[-3, a.shape[1] // 2], BLUE)


def test_media_kinds():
    assert [media_kind(n) for n in ("a.JPG", "b.heic", "c.avif", "d.CR3", "e.dng", "f.MOV", "g.webm", "h.txt")] == [
        "still",
        "heif",
        "heif",
        "raw",
        "raw",
        "video",
        "video",
        None,
    ]


# Stills ----------------------------------------------------------------------------------------


def test_jpeg_orientation_draft_and_full_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    two_halves(800, 600).save(tmp_path / "a.jpg", exif=exif, quality=95)
    full = open_still(tmp_path / "a.jpg")
    assert (full.width, full.height) == (600, 800) and full.image.size == (600, 800)
    assert turned_right(full.image)
    small = open_still(tmp_path / "a.jpg", min_side=100)
    assert (small.width, small.height) == (600, 800)  # the full size boxes are given in
    assert 100 <= min(small.image.size) < 300 and turned_right(small.image)


def test_transparency_is_composited_on_white(tmp_path):
    a = np.zeros((20, 20, 4), np.uint8)
    a[:, :10] = (0, 0, 255, 255)
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    pixels = np.asarray(open_still(tmp_path / "a.png").image)
    assert tuple(pixels[5, 2]) == (0, 0, 255) and tuple(pixels[5, 15]) == (255, 255, 255)


def test_heic_decodes_with_its_rotation_colours_and_size_without_registering_an_opener(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Apple"
    heif = pillow_heif.from_pillow(two_halves(400, 240))
    heif.info["exif"] = exif.tobytes()
    heif.save(tmp_path / "IMG_0001.HEIC", quality=95)
    decoded = open_still(tmp_path / "IMG_0001.HEIC")
    assert (decoded.width, decoded.height) == (240, 400) and decoded.image.size == (240, 400)
    assert turned_right(decoded.image)
    assert read_exif(tmp_path / "IMG_0001.HEIC").orientation == 6  # as the camera wrote it
    meta = read_metadata(tmp_path / "IMG_0001.HEIC")
    assert meta["make"] == "Apple" and meta["orientation"] == 6
    # Decoding registered nothing with Pillow: Image.open still refuses HEIC.
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(tmp_path / "IMG_0001.HEIC")
    # Told apart by content: a HEIC that an export named .jpg still decodes.
    (tmp_path / "export.jpg").write_bytes((tmp_path / "IMG_0001.HEIC").read_bytes())
    assert open_still(tmp_path / "export.jpg").image.size == (240, 400)


def test_heic_draft_decodes_an_embedded_thumbnail_that_is_large_enough(tmp_path):
    pillow_heif.from_pillow(two_halves(800, 600)).save(tmp_path / "a.heic", thumbnails=[256], quality=90)
    small = open_still(tmp_path / "a.heic", min_side=150)
    assert small.image.size == (256, 192) and (small.width, small.height) == (800, 600)
    pixels = np.asarray(small.image)
    assert close(pixels[96, 10], RED) and close(pixels[96, 245], BLUE)
    assert open_still(tmp_path / "a.heic", min_side=200).image.size == (800, 600)  # 192 < 200: no thumbnail


def test_avif_decodes_with_its_orientation_and_colours(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    two_halves(400, 240).save(tmp_path / "a.avif", exif=exif.tobytes(), quality=90)
    decoded = open_still(tmp_path / "a.avif")
    assert (decoded.width, decoded.height) == (240, 400) and turned_right(decoded.image)


def test_damaged_and_oversized_images_raise_one_line_data_errors_and_leave_pillow_alone(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="cannot decode image") as caught:
        open_still(tmp_path / "broken.jpg")
    assert "\n" not in str(caught.value)
    limit = Image.MAX_IMAGE_PIXELS
    Image.new("1", (11_000, 10_000)).save(tmp_path / "huge.png")
    with pytest.raises(DataError, match=f"above the {MAX_PIXELS:,}-pixel limit"):
        open_still(tmp_path / "huge.png")
    assert limit == Image.MAX_IMAGE_PIXELS


# RAW -------------------------------------------------------------------------------------------

ASCII, SHORT, LONG, RATIONAL, UNDEFINED, BYTE, SRATIONAL = 2, 3, 4, 5, 7, 1, 10


class TiffBuilder:
    """A little-endian TIFF written tag by tag: what RAW files are made of."""

    def __init__(self, magic=b"II*\x00"):
        self.data = bytearray(magic + b"\0\0\0\0")

    def blob(self, payload):
        self.data += b"\0" * (len(self.data) % 2)
        offset = len(self.data)
        self.data += payload
        return offset

    def ifd(self, entries):
        self.data += b"\0" * (len(self.data) % 2)
        start = len(self.data)
        extra_at = start + 2 + 12 * len(entries) + 4
        table, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
        for tag in sorted(entries):
            kind, values = entries[tag]
            if kind in (ASCII, UNDEFINED, BYTE):
                payload = bytes(values) + (b"\0" if kind == ASCII else b"")
                count = len(payload)
            elif kind in (RATIONAL, SRATIONAL):
                payload = b"".join(struct.pack("<II" if kind == RATIONAL else "<ii", *v) for v in values)
                count = len(values)
            else:
                payload = b"".join(struct.pack("<H" if kind == SHORT else "<I", v) for v in values)
                count = len(values)
            if len(payload) <= 4:
                field = payload.ljust(4, b"\0")
            else:
                extra += b"\0" * (len(extra) % 2)
                field = struct.pack("<I", extra_at + len(extra))
                extra += payload
            table += struct.pack("<HHI", tag, kind, count) + field
        self.data += table + struct.pack("<I", 0) + extra
        return start

    def finish(self, first):
        self.data[4:8] = struct.pack("<I", first)
        return bytes(self.data)


def jpeg_bytes(width, height, exif=None):
    out = io.BytesIO()
    two_halves(width, height).save(out, "JPEG", quality=92, **({"exif": exif} if exif else {}))
    return out.getvalue()


def write_dng(path, preview=(800, 600), orientation=6, raw=(64, 48)):
    """A DNG: IFD0 holds a JPEG preview (strip, compression 7, YCbCr), its SubIFD the sensor's
    16-bit CFA data, its Exif IFD the capture time."""
    t = TiffBuilder()
    picture = jpeg_bytes(*preview)
    preview_at = t.blob(picture)
    width, height = raw
    cfa = (np.arange(width * height, dtype=np.uint16).reshape(height, width) % 2048 + 1000).astype("<u2").tobytes()
    cfa_at = t.blob(cfa)
    sensor = t.ifd(
        {
            254: (LONG, [0]),
            256: (LONG, [width]),
            257: (LONG, [height]),
            258: (SHORT, [16]),
            259: (SHORT, [1]),
            262: (SHORT, [32803]),
            273: (LONG, [cfa_at]),
            277: (SHORT, [1]),
            278: (LONG, [height]),
            279: (LONG, [len(cfa)]),
            33421: (SHORT, [2, 2]),
            33422: (BYTE, [0, 1, 1, 2]),
            50714: (LONG, [0]),
            50717: (LONG, [4095]),
        }
    )
    exif = t.ifd({36867: (ASCII, b"2023:12:31 23:30:00"), 36881: (ASCII, b"-05:00")})
    first = t.ifd(
        {
            254: (LONG, [1]),
            256: (LONG, [preview[0]]),
            257: (LONG, [preview[1]]),
            258: (SHORT, [8, 8, 8]),
            259: (SHORT, [7]),
            262: (SHORT, [6]),
            271: (ASCII, b"Testmaker"),
            272: (ASCII, b"Model 1"),
            273: (LONG, [preview_at]),
            274: (SHORT, [orientation]),
            277: (SHORT, [3]),
            278: (LONG, [preview[1]]),
            279: (LONG, [len(picture)]),
            330: (LONG, [sensor]),
            34665: (LONG, [exif]),
            50706: (BYTE, [1, 4, 0, 0]),
            50708: (ASCII, b"Testmaker Model 1"),
            50721: (
                SRATIONAL,
                [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)],
            ),  # ColorMatrix1
            50778: (SHORT, [21]),
        }
    )
    path.write_bytes(t.finish(first))


def test_raw_decodes_through_its_embedded_preview_turned_as_the_file_says(tmp_path):
    write_dng(tmp_path / "a.dng")
    decoded = open_still(tmp_path / "a.dng")
    assert (decoded.width, decoded.height) == (600, 800) and turned_right(decoded.image)
    small = open_still(tmp_path / "a.dng", min_side=100)  # the preview is a JPEG: draft mode
    assert (small.width, small.height) == (600, 800) and min(small.image.size) < 600 and turned_right(small.image)
    meta = read_metadata(tmp_path / "a.dng")
    assert (meta["make"], meta["model"], meta["orientation"]) == ("Testmaker", "Model 1", 6)
    assert meta["taken"] == "2023-12-31T23:30:00-05:00" and meta["time_source"] == "exif"
    assert meta["taken_utc"] == datetime(2024, 1, 1, 4, 30, tzinfo=UTC).timestamp()


def test_the_largest_preview_wins_wherever_the_file_keeps_it(tmp_path):
    """NEF-style: a thumbnail in IFD0 (JPEGInterchangeFormat) and the big preview in a SubIFD."""
    t = TiffBuilder()
    thumb, big = jpeg_bytes(160, 120), jpeg_bytes(1024, 768)
    thumb_at, big_at = t.blob(thumb), t.blob(big)
    preview_ifd = t.ifd({259: (SHORT, [6]), 513: (LONG, [big_at]), 514: (LONG, [len(big)])})
    first = t.ifd({259: (SHORT, [6]), 330: (LONG, [preview_ifd]), 513: (LONG, [thumb_at]), 514: (LONG, [len(thumb)])})
    (tmp_path / "a.nef").write_bytes(t.finish(first))
    decoded = open_still(tmp_path / "a.nef")
    assert (decoded.width, decoded.height) == (1024, 768)


def test_panasonic_and_fujifilm_previews(tmp_path):
    rw2 = TiffBuilder(b"IIU\x00")  # not TIFF's magic number, but TIFF's layout
    first = rw2.ifd({0x2E: (UNDEFINED, jpeg_bytes(640, 520)), 271: (ASCII, b"Panasonic")})
    (tmp_path / "a.rw2").write_bytes(rw2.finish(first))
    assert open_still(tmp_path / "a.rw2").image.size == (640, 520)
    assert read_metadata(tmp_path / "a.rw2")["make"] == "Panasonic"

    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "FUJIFILM"
    picture = jpeg_bytes(800, 600, exif=exif.tobytes())
    header = b"FUJIFILMCCD-RAW 0201FF383501".ljust(84, b"\0") + struct.pack(">II", 100, len(picture))
    (tmp_path / "a.raf").write_bytes(header.ljust(100, b"\0") + picture)
    decoded = open_still(tmp_path / "a.raf")
    assert (decoded.width, decoded.height) == (600, 800) and turned_right(decoded.image)
    assert read_metadata(tmp_path / "a.raf")["make"] == "FUJIFILM"


def test_a_raw_with_only_a_thumbnail_needs_the_raw_extra(tmp_path, monkeypatch):
    write_dng(tmp_path / "small.dng", preview=(160, 120))
    monkeypatch.setitem(sys.modules, "rawpy", None)  # as if harmosearch[raw] were not installed
    with pytest.raises(UnsupportedFormat, match=r"install harmosearch\[raw\]") as caught:
        open_still(tmp_path / "small.dng")
    assert caught.value.extra == "raw" and isinstance(caught.value, DataError)
    assert str(PREVIEW_MIN_SIDE) in str(caught.value)


def test_rawpy_demosaics_a_raw_without_a_usable_preview(tmp_path):
    pytest.importorskip("rawpy")
    write_dng(tmp_path / "small.dng", preview=(160, 120), raw=(64, 48))
    decoded = open_still(tmp_path / "small.dng")
    # LibRaw decoded the 64 x 48 sensor data and turned it by the file's orientation 6.
    assert (decoded.width, decoded.height) == (48, 64) == decoded.image.size


# Metadata --------------------------------------------------------------------------------------


def write_exif_jpeg(path, when="2024:07:15 10:00:00", offset="+02:00", subsec="25", gps=None):
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS R5"
    exif[0x0112] = 1
    inner = exif.get_ifd(0x8769)
    inner[0x9003] = when
    if offset:
        inner[0x9011] = offset
    if subsec:
        inner[0x9291] = subsec
    if gps:
        exif.get_ifd(0x8825).update(gps)
    two_halves(64, 48).save(path, exif=exif)


def test_exif_time_with_offset_camera_and_gps(tmp_path):
    rational = TiffImagePlugin.IFDRational
    gps = {1: "S", 2: (rational(33), rational(51), rational(216, 10)), 3: "W", 4: (151.0, 12.0, 54.0)}
    write_exif_jpeg(tmp_path / "a.jpg", gps=gps)
    meta = read_metadata(tmp_path / "a.jpg")
    assert meta["time_source"] == "exif"
    assert meta["taken"] == "2024-07-15T10:00:00.250000+02:00"
    assert meta["taken_utc"] == datetime(2024, 7, 15, 8, 0, 0, 250000, tzinfo=UTC).timestamp()
    assert meta["taken_local"] == (datetime(2024, 7, 15, 10, 0, 0, 250000) - datetime(1970, 1, 1)).total_seconds()
    assert (meta["make"], meta["model"], meta["orientation"]) == ("Canon", "EOS R5", 1)
    assert meta["latitude"] == pytest.approx(-(33 + 51 / 60 + 21.6 / 3600))
    assert meta["longitude"] == pytest.approx(-(151 + 12 / 60 + 54 / 3600))


def test_a_local_time_without_offset_stays_local(tmp_path):
    write_exif_jpeg(tmp_path / "a.jpg", offset=None, subsec=None, gps={1: "N", 2: (0.0, 0.0, 0.0), 3: "E", 4: 0.0})
    meta = read_metadata(tmp_path / "a.jpg")
    assert meta["taken"] == "2024-07-15T10:00:00" and meta["taken_utc"] is None and meta["time_source"] == "exif"
    assert meta["latitude"] is None and meta["longitude"] is None  # 0, 0 is a receiver without a fix


@pytest.mark.parametrize("when", ["0000:00:00 00:00:00", "    :  :     :  :  ", "2024:13:45 10:00:00"])
def test_impossible_exif_dates_fall_back_to_the_mtime(tmp_path, when):
    write_exif_jpeg(tmp_path / "a.jpg", when=when)
    moment = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC).timestamp()
    os.utime(tmp_path / "a.jpg", (moment, moment))
    meta = read_metadata(tmp_path / "a.jpg")
    assert meta["time_source"] == "mtime" and meta["taken_utc"] == moment
    assert meta["make"] == "Canon"  # the rest of the EXIF still counts


def test_files_without_metadata_and_unreadable_paths(tmp_path):
    two_halves(32, 32).save(tmp_path / "plain.png")
    meta = read_metadata(tmp_path / "plain.png")
    assert meta["time_source"] == "mtime" and meta["make"] is None and meta["latitude"] is None
    (tmp_path / "noise.jpg").write_bytes(b"nothing")
    assert read_metadata(tmp_path / "noise.jpg")["time_source"] == "mtime"
    with pytest.raises(DataError, match="cannot stat"):
        read_metadata(tmp_path / "missing.jpg")


def test_exif_time_and_iso6709_forms():
    assert exif_time("2024:02:29 12:00:00", None, "Z") == datetime(2024, 2, 29, 12, tzinfo=UTC)
    assert exif_time("2024:07:15 10:00:00", "5", "+25:00") == datetime(2024, 7, 15, 10, 0, 0, 500000)
    assert exif_time("2023:02:29 12:00:00") is None
    assert iso6709("+48.8584+002.2945+035.000/") == pytest.approx((48.8584, 2.2945))
    assert iso6709("-3351.36+15112.90/") == pytest.approx((-(33 + 51.36 / 60), 151 + 12.9 / 60))
    assert iso6709("+485130-0021545/") == pytest.approx((48 + 51 / 60 + 30 / 3600, -(2 + 15 / 60 + 45 / 3600)))
    assert iso6709("garbage") is None and iso6709("+95.0+010.0/") is None


def test_dates_for_the_filters():
    assert period("2024") == (datetime(2024, 1, 1), datetime(2025, 1, 1))
    assert period("2024-12") == (datetime(2024, 12, 1), datetime(2025, 1, 1))
    assert period("2024-02-29") == (datetime(2024, 2, 29), datetime(2024, 3, 1))
    assert period("2024-07-15T10:00") == (datetime(2024, 7, 15, 10), datetime(2024, 7, 15, 10, 1))
    assert period("2024-07-15 10:00:30")[1] == datetime(2024, 7, 15, 10, 0, 31)
    assert parse_date("2024-07") == datetime(2024, 7, 1)
    low, high = date_range("2024-07", "2024-08")
    assert (low, high) == (
        (datetime(2024, 7, 1) - datetime(1970, 1, 1)).total_seconds(),
        (datetime(2024, 8, 1) - datetime(1970, 1, 1)).total_seconds(),
    )
    assert date_range(None, "2024")[0] == -np.inf and date_range("2024")[1] == np.inf
    for bad in ("2024-13", "2023-02-29", "July 2024", "2024-07-15T25:00", "24-07-15"):
        with pytest.raises(QueryError):
            period(bad)
    with pytest.raises(QueryError, match="not earlier"):
        date_range("2024-08", "2024-07")


# Video -----------------------------------------------------------------------------------------


# What is not a photo ---------------------------------------------------------------------------


def walk(root, rules):
    """The os.walk with pruning that the ignore module's doc shows."""
    kept = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not rules.skips_dir((here / d).as_posix())]
        kept += [(here / f).as_posix() for f in files if not rules.skips_file((here / f).as_posix())]
    return sorted(kept)


@pytest.fixture()
def photo_root(tmp_path):
    for name in (
        "a.jpg",
        "._a.jpg",
        ".DS_Store",
        "Thumbs.db",
        "2024/b.jpg",
        "2024/._b.jpg",
        "2024/@eaDir/b.jpg/SYNOPHOTO_THUMB_M.jpg",
        "2024/.thumbnails/b.png",
        "$RECYCLE.BIN/old.jpg",
        "__MACOSX/2024/._c.jpg",
        ".hidden/d.jpg",
        "raw/e.dng",
        "tmp/f.jpg",
        "g.gif",
        "keep.gif",
        "deep/tmp/h.jpg",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_system_files_are_skipped_by_default(photo_root):
    kept = walk(photo_root, IgnoreRules.load(photo_root))
    assert kept == ["2024/b.jpg", "a.jpg", "deep/tmp/h.jpg", "g.gif", "keep.gif", "raw/e.dng", "tmp/f.jpg"]


def test_ignore_file_and_excludes_in_gitignore_syntax(photo_root):
    (photo_root / IGNORE_FILE).write_text("# not photos\n/tmp/\n*.gif\n!keep.gif\n\n")
    rules = IgnoreRules.load(photo_root, excludes=["raw/"])
    assert walk(photo_root, rules) == ["2024/b.jpg", "a.jpg", "deep/tmp/h.jpg", "keep.gif"]
    assert rules.reason("g.gif") == f"{IGNORE_FILE} line 3: '*.gif'"
    assert rules.reason("raw", is_dir=True) == "--exclude 'raw/'"
    assert rules.reason("2024/._b.jpg") == "default rule '._*'"
    assert rules.reason("2024/@eaDir", is_dir=True) == "default rule '@eaDir/'"
    assert rules.reason(".hidden", is_dir=True) == "hidden"
    assert rules.reason("a.jpg") is None


def test_include_hidden_keeps_hidden_folders_but_never_system_files(photo_root):
    kept = walk(photo_root, IgnoreRules.load(photo_root, include_hidden=True))
    assert ".hidden/d.jpg" in kept
    assert not any(Path(p).name.startswith("._") or "@eaDir" in p or ".thumbnails" in p for p in kept)


def test_invalid_patterns_name_where_they_come_from(photo_root):
    with pytest.raises(ConfigError, match="--exclude '!'"):
        IgnoreRules.load(photo_root, excludes=["!"])
    (photo_root / IGNORE_FILE).write_bytes(b"\xff\xfe bad")
    with pytest.raises(ConfigError, match="cannot read"):
        IgnoreRules.load(photo_root)
