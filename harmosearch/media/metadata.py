"""What a photo or video says about itself: capture time, camera, orientation and GPS position,
and the dates that `--after` and `--before` take.

Capture time, first found wins (`time_source` says which):

- "exif": EXIF DateTimeOriginal (else DateTimeDigitized) with its sub-seconds, and its UTC offset
  from OffsetTimeOriginal (else OffsetTimeDigitized, else OffsetTime) when the camera wrote one.
- "video": a video container's creation time: Apple's `com.apple.quicktime.creationdate` (the
  local time with its offset), else `creation_time` (UTC, shown in this machine's time zone).
- "mtime": the file's modification time, in this machine's time zone.

Dates are compared on the local clock of the capture: `taken_local` is that wall-clock time
counted in seconds from 1970-01-01T00:00 as if it were UTC, so a photo taken at 23:30 on
14 July in Tokyo falls on 14 July wherever the index is searched. `taken_utc` is the instant
(Unix time) when it is known: an offset was recorded, the source is UTC, or it is the mtime.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypedDict

from harmosearch.errors import DataError, QueryError

TimeSource = Literal["exif", "video", "mtime"]


class Metadata(TypedDict):
    taken: str  # ISO 8601, with the UTC offset when known: "2024-07-15T10:00:00+02:00" or "2024-07-15T10:00:00"
    taken_local: float  # the wall-clock time of capture in seconds from 1970-01-01T00:00 (see the module doc)
    taken_utc: float | None  # Unix time of capture when the instant is known
    time_source: TimeSource
    make: str | None
    model: str | None
    orientation: int | None  # EXIF 1-8 as recorded (for videos: from the display rotation)
    latitude: float | None  # decimal degrees, north positive
    longitude: float | None  # decimal degrees, east positive


METADATA_FIELDS: tuple[str, ...] = tuple(Metadata.__annotations__)

_EPOCH = datetime(1970, 1, 1)
# EXIF tags
_MAKE, _MODEL, _ORIENTATION, _OFFSET_TIME = 0x010F, 0x0110, 0x0112, 0x9010
_ORIGINAL, _DIGITIZED = 0x9003, 0x9004
_OFFSET_ORIGINAL, _OFFSET_DIGITIZED = 0x9011, 0x9012
_SUBSEC_ORIGINAL, _SUBSEC_DIGITIZED = 0x9291, 0x9292
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4

_EXIF_TIME = re.compile(r"^\s*(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^\s*(?:(Z)|([+-])(\d{2}):?(\d{2}))\s*$")
_MAX_OFFSET = timedelta(hours=14)


def read_metadata(path: str | Path) -> Metadata:
    """Capture time, camera, orientation and GPS position of a still or video.

    Best effort: metadata a file lacks, or that cannot be read or makes no sense (a date of
    0000:00:00, a latitude of 95 degrees, GPS at exactly 0, 0 as receivers without a fix
    write), is None, and the time falls back to the mtime. Only a file that cannot be stat'ed
    raises DataError.
    """
    from harmosearch.media.formats import media_kind

    path = Path(path)
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise DataError(f"cannot stat {path.name}: {exc.strerror}") from None
    found = _video_metadata(path) if media_kind(path) == "video" else _still_metadata(path)
    taken: datetime | None = found.pop("taken", None)
    source: TimeSource = found.pop("time_source", "mtime")
    if taken is None:
        taken, source = datetime.fromtimestamp(mtime).astimezone(), "mtime"
    return Metadata(
        taken=taken.isoformat(),
        taken_local=local_seconds(taken),
        taken_utc=taken.timestamp() if taken.tzinfo is not None else None,
        time_source=source,
        make=found.get("make"),
        model=found.get("model"),
        orientation=found.get("orientation"),
        latitude=found.get("latitude"),
        longitude=found.get("longitude"),
    )


def local_seconds(moment: datetime) -> float:
    """A time's wall-clock reading (its offset ignored) in seconds from 1970-01-01T00:00."""
    return (moment.replace(tzinfo=None) - _EPOCH).total_seconds()


def _still_metadata(path: Path) -> dict[str, Any]:
    from harmosearch.media.formats import read_exif

    try:
        exif = read_exif(path)
    except DataError:
        return {}
    found: dict[str, Any] = {
        "make": _text(exif.base.get(_MAKE)),
        "model": _text(exif.base.get(_MODEL)),
        "orientation": exif.orientation if isinstance(exif.orientation, int) and 1 <= exif.orientation <= 8 else None,
    }
    for stamp, subsec, offset in (
        (_ORIGINAL, _SUBSEC_ORIGINAL, _OFFSET_ORIGINAL),
        (_DIGITIZED, _SUBSEC_DIGITIZED, _OFFSET_DIGITIZED),
    ):
        taken = exif_time(
            _text(exif.exif.get(stamp)),
            _text(exif.exif.get(subsec)),
            _text(exif.exif.get(offset)) or _text(exif.exif.get(_OFFSET_TIME)) or _text(exif.base.get(_OFFSET_TIME)),
        )
        if taken is not None:
            found.update(taken=taken, time_source="exif")
            break
    position = gps_position(exif.gps)
    if position is not None:
        found["latitude"], found["longitude"] = position
    return found


def exif_time(stamp: str | None, subsec: str | None = None, offset: str | None = None) -> datetime | None:
    """An EXIF date-time ("2024:07:15 10:00:00"), its sub-seconds ("25") and offset ("+02:00")
    as a datetime, aware when the offset is valid; None for a missing or impossible date."""
    match = _EXIF_TIME.match(stamp or "")
    if match is None:
        return None
    try:
        moment = datetime(*(int(part) for part in match.groups()))  # type: ignore[misc]
    except ValueError:  # 0000:00:00, month 13 ...
        return None
    digits = re.sub(r"\D", "", subsec or "")[:6]
    if digits:
        moment = moment.replace(microsecond=int(digits.ljust(6, "0")))
    zone = _parse_offset(offset)
    return moment.replace(tzinfo=zone) if zone is not None else moment


def _parse_offset(text: str | None) -> timezone | None:
    match = _OFFSET.match(text or "")
    if match is None:
        return None
    if match.group(1):
        return UTC
    delta = timedelta(hours=int(match.group(3)), minutes=int(match.group(4)))
    if delta > _MAX_OFFSET or int(match.group(4)) >= 60:
        return None
    return timezone(-delta if match.group(2) == "-" else delta)


def gps_position(gps: dict[int, Any]) -> tuple[float, float] | None:
    """(latitude, longitude) in signed decimal degrees from an EXIF GPS directory, or None."""
    latitude = _degrees(gps.get(_GPS_LAT), _text(gps.get(_GPS_LAT_REF)), "S")
    longitude = _degrees(gps.get(_GPS_LON), _text(gps.get(_GPS_LON_REF)), "W")
    return _position(latitude, longitude)


def _degrees(value: Any, ref: str | None, negative: str) -> float | None:
    try:
        parts = [float(v) for v in value] if isinstance(value, tuple | list) else [float(value)]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not 1 <= len(parts) <= 3:
        return None
    degrees = sum(part / 60**i for i, part in enumerate(parts))
    return -degrees if (ref or "").strip().upper() == negative else degrees


def _position(latitude: float | None, longitude: float | None) -> tuple[float, float] | None:
    if latitude is None or longitude is None or not (math.isfinite(latitude) and math.isfinite(longitude)):
        return None
    if abs(latitude) > 90 or abs(longitude) > 180 or (latitude == 0 and longitude == 0):
        return None
    return latitude, longitude


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _video_metadata(path: Path) -> dict[str, Any]:
    from harmosearch.media.video import ROTATION_TO_EXIF, probe

    try:
        info = probe(path)
    except DataError:
        return {}
    tags = {key.lower(): value for key, value in info.tags.items()}
    found: dict[str, Any] = {
        "make": _text(tags.get("com.apple.quicktime.make") or tags.get("make")),
        "model": _text(tags.get("com.apple.quicktime.model") or tags.get("model")),
        "orientation": ROTATION_TO_EXIF.get(info.rotation % 360),
    }
    taken = _iso_time(tags.get("com.apple.quicktime.creationdate"))
    if taken is None:
        utc = _iso_time(tags.get("creation_time"))
        # A container's UTC time without a local time is shown on this machine's clock, as mtimes are.
        taken = utc.astimezone() if utc is not None and utc.tzinfo is not None else utc
    if taken is not None and taken.year > 1970:  # muxers without a clock write 1970 or 1904
        found.update(taken=taken, time_source="video")
    position = iso6709(tags.get("com.apple.quicktime.location.iso6709") or tags.get("location"))
    if position is not None:
        found["latitude"], found["longitude"] = position
    return found


def _iso_time(text: str | None) -> datetime | None:
    text = _text(text)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


_ISO6709 = re.compile(r"^([+-])(\d+(?:\.\d+)?)([+-])(\d+(?:\.\d+)?)")


def iso6709(text: str | None) -> tuple[float, float] | None:
    """(latitude, longitude) from an ISO 6709 position as videos store it ("+48.8584+002.2945+035.000/");
    degrees, degrees-minutes (+4851.50) and degrees-minutes-seconds (+485130) forms."""
    match = _ISO6709.match(_text(text) or "")
    if match is None:
        return None
    latitude = _iso6709_part(match.group(1), match.group(2), 2)
    longitude = _iso6709_part(match.group(3), match.group(4), 3)
    return _position(latitude, longitude)


def _iso6709_part(sign: str, number: str, degree_digits: int) -> float | None:
    whole, _, fraction = number.partition(".")
    extra = len(whole) - degree_digits  # 0: degrees, 2: + minutes, 4: + minutes and seconds
    if extra not in (0, 2, 4):
        return None
    value = float(number)
    if extra == 0:
        degrees = value
    elif extra == 2:
        degrees = int(whole[:degree_digits]) + float(whole[degree_digits:] + "." + (fraction or "0")) / 60
    else:
        minutes = int(whole[degree_digits : degree_digits + 2])
        seconds = float(whole[degree_digits + 2 :] + "." + (fraction or "0"))
        degrees = int(whole[:degree_digits]) + minutes / 60 + seconds / 3600
    return -degrees if sign == "-" else degrees


# Dates for --after and --before -----------------------------------------------------------------

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?)?)?$")


def period(text: str) -> tuple[datetime, datetime]:
    """The stretch of local time a date names, as [start, end): "2024" is the whole year,
    "2024-07" July, "2024-07-15" that day, "2024-07-15T10:00" (or with a space, or seconds)
    that minute (second). Dates carry no time zone: they are read on the photos' local clocks."""
    match = _DATE.match(text.strip())
    if match is None:
        raise QueryError(f"cannot read the date {text!r}; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM")
    year, month, day, hour, minute, second = (int(g) if g else None for g in match.groups())
    try:
        start = datetime(year, month or 1, day or 1, hour or 0, minute or 0, second or 0)  # type: ignore[arg-type]
        if month is None:
            end = start.replace(year=start.year + 1)
        elif day is None:
            end = start.replace(year=start.year + 1, month=1) if month == 12 else start.replace(month=month + 1)
        elif hour is None:
            end = start + timedelta(days=1)
        elif second is None:
            end = start + timedelta(minutes=1)
        else:
            end = start + timedelta(seconds=1)
    except (ValueError, OverflowError):
        raise QueryError(f"no such date: {text!r}") from None
    return start, end


def parse_date(text: str) -> datetime:
    """The start of the period a date names (see `period`): what --after and --before compare."""
    return period(text)[0]


def date_range(after: str | None = None, before: str | None = None) -> tuple[float, float]:
    """The [low, high) bounds in local seconds (compare with `taken_local`) of `--after AFTER`
    and `--before BEFORE`.

    Both flags name the start of their period: --after keeps photos taken at or after it
    (inclusive) and --before keeps photos taken before it (exclusive). So `--after 2024-07
    --before 2024-08` is July 2024, `--after 2024` starts on 1 January 2024, and `--before 2024`
    ends on 31 December 2023.
    """
    low = local_seconds(parse_date(after)) if after else -math.inf
    high = local_seconds(parse_date(before)) if before else math.inf
    if low >= high:
        raise QueryError(f"--after {after} is not earlier than --before {before}; nothing can match")
    return low, high
