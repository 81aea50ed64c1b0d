"""Videos: frames sampled every interval and at each change of scene, upright and scaled down,
with their times and the video's metadata; damaged videos and a missing PyAV named in one line."""

import sys
from datetime import UTC, datetime

import av
import numpy as np
import pytest

from harmosearch.errors import DataError
from harmosearch.media.formats import UnsupportedFormat
from harmosearch.media.metadata import read_metadata
from harmosearch.media.video import frame_at, probe, sample_frames

from .test_media import RED, close

FPS, SECONDS, W, H = 10, 6.0, 128, 96


APPEARS, CUT = 2.5, 4.3  # a red square appears; later the background changes to dark blue


def write_video(path, rotation=0, tags=None):
    # use_metadata_tags: the QuickTime muxer writes any tag, as iPhones store theirs
    with av.open(str(path), "w", container_options={"movflags": "use_metadata_tags"}) as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        container.metadata.update(tags or {})
        for i in range(int(SECONDS * FPS)):
            t = i / FPS
            a = np.full((H, W, 3), 128, np.uint8)
            a[:, :16] = 250  # a white stripe on the left shows the rotation
            if t >= CUT:
                a[:, 16:] = (20, 30, 120)
            if t >= APPEARS:
                a[24:72, 40:88] = RED
            for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(
        path,
        tags={"creation_time": "2024-07-15T08:00:00.000000Z", "location": "+48.8584+002.2945/"},
    )
    return path


def test_frames_every_interval_and_at_each_change(video):
    frames = sample_frames(video, every_s=2.0, scene_threshold=0.06, max_frames=50)
    assert [(round(f.time, 3), f.reason) for f in frames] == [
        (0.0, "interval"),
        (2.0, "interval"),
        (APPEARS, "change"),
        (4.0, "interval"),
        (CUT, "change"),
    ]
    appeared = np.asarray(frames[2].image)
    assert close(appeared[48, 64], RED) and close(appeared[48, 30], (128, 128, 128))
    assert not close(np.asarray(frames[1].image)[48, 64], RED)  # not there before
    assert close(np.asarray(frames[4].image)[80, 110], (20, 30, 120))
    assert all((f.width, f.height, f.image.size) == (W, H, (W, H)) for f in frames)


def test_frame_at_gives_back_the_sampled_frame(video):
    sampled = sample_frames(video, every_s=2.0, scene_threshold=0.06)[2]
    again = frame_at(video, sampled.time)
    assert again.time == sampled.time
    assert np.array_equal(np.asarray(again.image), np.asarray(sampled.image))
    assert close(np.asarray(frame_at(video, 3.33).image)[48, 64], RED)
    with pytest.raises(DataError, match="ends before"):
        frame_at(video, 60.0)


def test_max_frames_keeps_regular_samples_across_the_whole_video(video):
    frames = sample_frames(video, every_s=0.5, scene_threshold=0.06, max_frames=6)
    assert len(frames) <= 6
    regular = [f.time for f in frames if f.reason == "interval"]
    assert regular == [0.0, 2.0, 4.0]  # the interval widened to 6 s / (6 // 2)
    assert [f.time for f in frames if f.reason == "change"] == [APPEARS, CUT]


def test_rotated_video_frames_are_shown_upright_and_scaled_down(tmp_path):
    write_video(tmp_path / "portrait.mp4", rotation=90)
    frame = sample_frames(tmp_path / "portrait.mp4", every_s=10.0, max_frames=1, min_side=48)[0]
    assert (frame.width, frame.height) == (H, W) and frame.image.size == (48, 64)
    pixels = np.asarray(frame.image)
    assert close(pixels[-2, 24], (250, 250, 250)) and close(pixels[2, 24], (128, 128, 128))  # stripe at the bottom
    info = probe(tmp_path / "portrait.mp4")
    assert (info.rotation, info.width, info.height) == (90, H, W)
    assert info.duration == pytest.approx(SECONDS, abs=0.15)
    assert read_metadata(tmp_path / "portrait.mp4")["orientation"] == 8


def test_video_metadata(video, tmp_path):
    meta = read_metadata(video)
    assert meta["time_source"] == "video"
    assert meta["taken_utc"] == datetime(2024, 7, 15, 8, tzinfo=UTC).timestamp()
    assert (meta["latitude"], meta["longitude"]) == pytest.approx((48.8584, 2.2945))
    apple = {
        "com.apple.quicktime.creationdate": "2024-07-15T10:00:00+0200",
        "com.apple.quicktime.location.ISO6709": "-33.8560+151.2150+010.000/",
        "com.apple.quicktime.make": "Apple",
        "com.apple.quicktime.model": "iPhone 15",
        "creation_time": "2024-07-15T08:00:00.000000Z",
    }
    write_video(tmp_path / "iphone.mov", tags=apple)
    meta = read_metadata(tmp_path / "iphone.mov")
    assert meta["taken"] == "2024-07-15T10:00:00+02:00" and meta["time_source"] == "video"
    assert (meta["make"], meta["model"]) == ("Apple", "iPhone 15")
    assert (meta["latitude"], meta["longitude"]) == pytest.approx((-33.856, 151.215))


def test_damaged_videos_and_videos_without_pyav(video, tmp_path, monkeypatch):
    (tmp_path / "cut.mp4").write_bytes(video.read_bytes()[:3000])  # the index (moov) is at the end
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 250)
    with av.open(str(tmp_path / "sound.mkv"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    for name, reason in (
        ("cut.mp4", "cannot open video"),
        ("junk.mp4", "cannot open video"),
        ("sound.mkv", "no video"),
    ):
        with pytest.raises(DataError, match=reason) as caught:
            sample_frames(tmp_path / name)
        assert "\n" not in str(caught.value)
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(UnsupportedFormat, match=r"install harmosearch\[video\]") as caught:
        sample_frames(video)
    assert caught.value.extra == "video"
    assert read_metadata(video)["time_source"] == "mtime"  # metadata is best effort
