"""Frames of a video to index: one every N seconds, plus one whenever the content changes.

PyAV (the `harmosearch[video]` extra) decodes. Each frame kept comes with its time in seconds
from the start of the video, and its pixels turned as the video's display matrix says (phones
store portrait videos as landscape frames plus a rotation).

The content-change measure is cheap on purpose: FFmpeg's scaler shrinks every decoded frame to a
CHANGE_SIDE x CHANGE_SIDE RGB thumbnail, and a frame is kept when the mean absolute difference
between its thumbnail and the last kept frame's, over pixels and channels on a 0-1 scale,
exceeds `scene_threshold`. Comparing with the last *kept* frame rather than the previous one
catches slow pans and fades as well as cuts, and never keeps two frames that look alike. Colour
counts, not only brightness, because queries name colours. A cut between unrelated shots scores
0.15-0.4; a red object filling a fifth of a grey picture scores about 0.08.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harmosearch.config import MediaConfig
from harmosearch.errors import DataError

EVERY_S = MediaConfig.every_s
SCENE_THRESHOLD = MediaConfig.scene_threshold
MAX_FRAMES = MediaConfig.max_frames
CHANGE_SIDE = 32
# A display matrix's counter-clockwise rotation, as the EXIF orientation that turns the same way.
ROTATION_TO_EXIF = {0: 1, 90: 8, 180: 3, 270: 6}
_MAX_BAD_PACKETS = 50  # consecutive undecodable packets after which the rest of a file is given up


@dataclass(frozen=True)
class Frame:
    time: float  # seconds from the start of the video
    image: Any  # PIL.Image.Image, RGB, rotation applied; smaller than width x height when min_side was given
    width: int  # full frame size after rotation
    height: int
    reason: Literal["interval", "change", "seek"]  # a regular sample, a change of content, or frame_at


@dataclass(frozen=True)
class VideoInfo:
    duration: float | None  # seconds; None when the container does not say
    width: int  # after rotation
    height: int
    rotation: int  # degrees counter-clockwise that stored frames are turned for display
    frame_rate: float | None
    tags: dict[str, str] = field(default_factory=dict)  # stream then container metadata (the container's win)


def probe(path: str | Path) -> VideoInfo:
    """Duration, displayed size, rotation, frame rate and metadata tags; decodes one frame."""
    with _opened(path) as (container, stream, origin):
        first = next(_decoded(container, stream, origin), None)
        if first is None:
            raise DataError("cannot decode any frame of the video")
        frame, _ = first
        rotation = int(frame.rotation) % 360
        width, height = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
        tags = {**dict(stream.metadata), **dict(container.metadata)}
        rate = stream.average_rate
        return VideoInfo(_duration(container, stream), width, height, rotation, float(rate) if rate else None, tags)


def sample_frames(
    path: str | Path,
    every_s: float = EVERY_S,
    scene_threshold: float = SCENE_THRESHOLD,
    max_frames: int = MAX_FRAMES,
    min_side: int | None = None,
) -> list[Frame]:
    """The frames to index, in time order: the first frame at or after every multiple of
    every_s seconds, and every frame whose content differs from the last kept one by more than
    scene_threshold (see the module doc).

    At most max_frames: when the container gives the duration, the interval is widened so the
    regular samples take at most half of them, and change frames are kept only while the rest
    of the regular samples still fit; without a duration, sampling stops at max_frames.
    With min_side, frames are scaled down so their short side is at least min_side (the
    encoder's input size); width and height stay the full displayed size.
    A file damaged part-way yields the frames before the damage; DataError (one line) when it
    cannot be opened, has no video stream or no frame decodes.
    """
    if every_s <= 0 or max_frames < 1:
        raise DataError(f"frame sampling needs every_s > 0 and max_frames >= 1, got {every_s} and {max_frames}")
    with _opened(path) as (container, stream, origin):
        duration = _duration(container, stream)
        interval, planned = every_s, None
        if duration is not None:
            interval = max(every_s, duration / max(1, max_frames // 2))
            planned = max(1, math.ceil(duration / interval - 1e-9))
        frames: list[Frame] = []
        last: np.ndarray | None = None
        next_regular, regular_taken, rotation = 0.0, 0, None
        for frame, seconds in _decoded(container, stream, origin):
            if rotation is None:
                rotation = int(frame.rotation) % 360
            small = frame.reformat(width=CHANGE_SIDE, height=CHANGE_SIDE, format="rgb24").to_ndarray()
            thumb = small.astype(np.float32) / 255.0
            reason: Literal["interval", "change"] | None = None
            if seconds >= next_regular:
                reason = "interval"
                regular_taken += 1
                next_regular = (math.floor(seconds / interval + 1e-9) + 1) * interval
            elif last is not None and float(np.abs(thumb - last).mean()) > scene_threshold:
                remaining = max(0, planned - regular_taken) if planned is not None else 0
                if len(frames) + remaining < max_frames:
                    reason = "change"
            if reason is None:
                continue
            frames.append(_frame(frame, seconds, rotation, min_side, reason))
            last = thumb
            if len(frames) >= max_frames:
                break
        if not frames:
            raise DataError("cannot decode any frame of the video")
        return frames


def frame_at(path: str | Path, seconds: float, min_side: int | None = None) -> Frame:
    """The frame shown at `seconds` from the start (the first one at or after it, within half a
    frame): for a time that sample_frames returned, that very frame, to draw a result on."""
    if not math.isfinite(seconds) or seconds < 0:
        raise DataError(f"no frame at {seconds} s")
    with _opened(path) as (container, stream, origin):
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        slack = 0.5 / rate if rate > 0 else 1e-3
        try:
            container.seek(int((seconds + origin) / stream.time_base), stream=stream, backward=True)
        except Exception:  # some containers cannot seek; decoding from the start still finds the frame
            container.seek(0)
        found = None
        for frame, at in _decoded(container, stream, origin):
            found = frame, at
            if at >= seconds - slack:
                break
        if found is None:
            raise DataError(f"cannot decode the frame at {seconds:.2f} s")
        frame, at = found
        if at < seconds - slack - 1.0:
            raise DataError(f"the video ends before {seconds:.2f} s")
        return _frame(frame, at, int(frame.rotation) % 360, min_side, "seek")


def timestamp(seconds: float) -> str:
    """A time in a video as players show it: "0:12", "12:05", "1:02:03" (whole seconds)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def require_pyav() -> None:
    """UnsupportedFormat naming the `video` extra when PyAV is not installed; checked before any
    video is hashed or decoded."""
    _av()


def _av() -> Any:
    try:
        import av
    except ImportError:
        from harmosearch.media.formats import UnsupportedFormat

        raise UnsupportedFormat("videos need PyAV; install harmosearch[video]", extra="video") from None
    return av


@contextmanager
def _opened(path: str | Path) -> Iterator[tuple[Any, Any, float]]:
    """(container, its first video stream, the stream's start in seconds); errors as DataError."""
    av = _av()
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise DataError(f"cannot open video: {getattr(exc, 'strerror', None) or _first_line(exc)}") from None
    with container:
        if not container.streams.video:
            raise DataError("no video stream in the file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        yield container, stream, origin


def _decoded(container: Any, stream: Any, origin: float) -> Iterator[tuple[Any, float]]:
    """(frame, seconds from the start) in presentation order; undecodable packets are skipped,
    and a container that cannot be read further ends the sequence."""
    av = _av()
    rate = float(stream.average_rate) if stream.average_rate else 0.0
    count, bad = 0, 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError:
            return
        try:
            decoded = packet.decode()
        except av.FFmpegError:
            bad += 1
            if bad > _MAX_BAD_PACKETS:
                return
            continue
        bad = 0
        for frame in decoded:
            # Without timestamps, frames are counted at the average rate.
            if frame.time is not None:
                seconds = frame.time - origin
            elif rate > 0:
                seconds = count / rate
            else:
                seconds = float(count)
            count += 1
            yield frame, max(0.0, float(seconds))


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # FFmpeg's AV_TIME_BASE
    return None


def _frame(frame: Any, seconds: float, rotation: int, min_side: int | None, reason: Any) -> Frame:
    from harmosearch.media.formats import apply_orientation

    width, height = frame.width, frame.height
    scale = min_side / min(width, height) if min_side else 1.0
    if scale < 1.0:
        image = frame.reformat(
            width=max(1, round(width * scale)), height=max(1, round(height * scale)), format="rgb24"
        ).to_image()
    else:
        image = frame.to_image()
    image = apply_orientation(image, ROTATION_TO_EXIF.get(rotation, 1))
    if rotation in (90, 270):
        width, height = height, width
    return Frame(seconds, image, width, height, reason)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
