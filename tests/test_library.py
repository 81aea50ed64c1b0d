"""A real photo library end to end: HEIC, AVIF, JPEGs with EXIF dates and GPS, system files, an
excluded folder and a short video, indexed with the bundled model; what the index holds, the
video found at the right time, date and folder filters, weak results and duplicates. Every
fixture is built here."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime

import av
import numpy as np
import pillow_heif
import pytest
from PIL import Image, TiffImagePlugin

from harmosearch.config import DEFAULT_MODEL, SHAPES_MODEL, load_config
from harmosearch.errors import QueryError
from harmosearch.indexing import build_index
from harmosearch.media.ignore import IGNORE_FILE
from harmosearch.model import loading
from harmosearch.model.encoder import load_encoder
from harmosearch.search import Index
from harmosearch.store import IndexReader, read_manifest
from harmosearch.synth import COLOURS, Scene, SceneObject, render

from .conftest import invoke

SIDE = 224
FPS = 10
SECONDS = 5.0
APPEARS = 2.5  # the red circle appears in the video
GREY = ((128, 128, 128), (128, 128, 128))


def scene(*objects):
    """A plain grey scene holding (colour, shape, centre x, centre y) objects, large."""
    drawn = tuple(
        SceneObject(colour, shape, "large", float(cx), float(cy), 38.0, COLOURS[colour])
        for colour, shape, cx, cy in objects
    )
    return render(Scene(0, SIDE, "solid", GREY, 0, drawn))[0]


def local_time(text):
    """Seconds since 1970 of a wall-clock time on this machine (what an mtime is read as)."""
    return time.mktime(datetime.fromisoformat(text).timetuple())


def exif(when=None, offset=None, gps=None, make=None, orientation=1):
    data = Image.Exif()
    data[0x0112] = orientation
    if make:
        data[0x010F], data[0x0110] = make
    if when:
        data.get_ifd(0x8769)[0x9003] = when
        if offset:
            data.get_ifd(0x8769)[0x9011] = offset
    if gps:
        data.get_ifd(0x8825).update(gps)
    return data


def write_video(path, before, after):
    """SECONDS of `before`, then `after` from APPEARS on; 10 frames a second, H.264."""
    with av.open(str(path), "w") as container:
        container.metadata["creation_time"] = "2024-07-20T08:00:00.000000Z"
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = SIDE, SIDE, "yuv420p"
        pictures = [np.asarray(before), np.asarray(after)]
        for i in range(int(SECONDS * FPS)):
            picture = pictures[i / FPS >= APPEARS]
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_library(root):
    """The photo folder: what each file is, and the index entries it should give."""
    rational = TiffImagePlugin.IFDRational
    gps = {1: "N", 2: (rational(48), rational(51), rational(30)), 3: "E", 4: (rational(2), rational(17), rational(40))}
    files = {
        "2024/summer/beach.jpg": (scene(("blue", "square", 60, 60)), exif("2024:07:15 10:00:00", "+02:00", gps)),
        "2023/winter/snow.jpg": (scene(("white", "star", 120, 110)), exif("2023:12:24 09:30:00")),
        "excluded/skip.jpg": (scene(("red", "circle", 112, 112)), None),
        "drafts/draft.jpg": (scene(("red", "circle", 112, 112)), None),
        "2024/@eaDir/beach.jpg/SYNOPHOTO_THUMB_M.jpg": (scene(("red", "circle", 60, 60)), None),
    }
    for name, (picture, data) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        picture.save(root / name, quality=95, **({"exif": data} if data else {}))
    phone = root / "phone" / "IMG_0001.HEIC"
    phone.parent.mkdir()
    heic = pillow_heif.from_pillow(scene(("green", "triangle", 100, 120)).resize((320, SIDE)))
    heic.info["exif"] = exif("2024:08:01 12:00:00", "+02:00", make=("Apple", "iPhone 15"), orientation=6).tobytes()
    heic.save(phone, quality=90)
    scene(("yellow", "cross", 150, 80)).save(root / "phone" / "sticker.avif", quality=90)
    os.utime(root / "phone" / "sticker.avif", (local_time("2022-05-01T12:00:00"),) * 2)
    (root / "2024" / "summer" / "._beach.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS resource fork
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "notes.txt").write_text("not a photo")
    (root / IGNORE_FILE).write_text("# work in progress\ndrafts/\n")
    write_video(
        root / "clip.mp4",
        scene(("blue", "square", 60, 60)),
        scene(("blue", "square", 60, 60), ("red", "circle", 160, 150)),
    )


CONFIG = load_config(
    overrides={
        "encoder.model": SHAPES_MODEL,
        "encoder.device": "cpu",
        "index.workers": 0,
        "index.exclude": ("excluded/",),
        # A circle filling a tenth of the frame changes it by about 0.035; the default 0.06 waits for more.
        "media.scene_threshold": 0.02,
    }
)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(CONFIG)


@pytest.fixture(scope="module")
def library(tmp_path_factory, encoder):
    root = tmp_path_factory.mktemp("library")
    photos = root / "photos"
    photos.mkdir()
    write_library(photos)
    report = build_index(photos, root / "index", CONFIG, encoder=encoder)
    return photos, root / "index", report


def test_the_index_holds_exactly_the_photos_and_each_video_frame(library):
    _, index, report = library
    assert report.skipped == []
    reader = IndexReader(index, load_indexes=False)
    images = reader.images
    rows = [
        (str(p), None if np.isnan(t) else round(float(t), 3))
        for p, t in zip(images["path"], images["frame_time"], strict=True)
    ]
    assert rows == [
        ("2023/winter/snow.jpg", None),
        ("2024/summer/beach.jpg", None),
        ("clip.mp4", 0.0),
        ("clip.mp4", 2.0),
        ("clip.mp4", APPEARS),  # the content changed
        ("clip.mp4", 4.0),
        ("phone/IMG_0001.HEIC", None),
        ("phone/sticker.avif", None),
    ]
    assert (report.images, report.videos, report.frames) == (8, 1, 4)
    by_path = {str(p): i for i, p in enumerate(images["path"]) if np.isnan(images["frame_time"][i])}
    video = [i for i, p in enumerate(images["path"]) if p == "clip.mp4"]
    assert len({images["sha256"][i] for i in video}) == 1 and len({images["size"][i] for i in video}) == 1
    assert all((images["width"][i], images["height"][i]) == (SIDE, SIDE) for i in video)

    def meta(path, *names):
        row = by_path[path] if path in by_path else video[0]
        return tuple(images[n][row] for n in names)

    assert meta("2024/summer/beach.jpg", "taken", "time_source") == ("2024-07-15T10:00:00+02:00", "exif")
    assert meta("2024/summer/beach.jpg", "latitude", "longitude") == pytest.approx((48.858333, 2.294444))
    assert meta("2023/winter/snow.jpg", "taken", "time_source") == ("2023-12-24T09:30:00", "exif")
    assert np.isnan(meta("2023/winter/snow.jpg", "taken_utc")[0])  # no offset recorded: the instant is unknown
    heic = by_path["phone/IMG_0001.HEIC"]
    assert (images["width"][heic], images["height"][heic]) == (SIDE, 320)  # turned as its orientation 6 says
    assert meta("phone/IMG_0001.HEIC", "make", "model", "orientation") == ("Apple", "iPhone 15", 6)
    assert meta("phone/sticker.avif", "time_source", "taken_local") == (
        "mtime",
        (datetime(2022, 5, 1, 12) - datetime(1970, 1, 1)).total_seconds(),
    )
    assert meta("clip.mp4", "time_source")[0] == "video"
    assert read_manifest(index)["counts"] == {"images": 8, "regions": report.regions, "videos": 1, "frames": 4}


def test_an_update_reuses_a_video_as_a_whole_and_follows_its_rename(library, tmp_path, encoder):
    photos, index, _ = library
    copy, target = tmp_path / "photos", tmp_path / "index"
    shutil.copytree(photos, copy)
    shutil.copytree(index, target)
    (copy / "clip.mp4").rename(copy / "holiday.mp4")
    (copy / "2023" / "winter" / "snow.jpg").unlink()
    report = build_index(copy, target, CONFIG, encoder=encoder)
    assert (report.renamed, report.removed, report.encoded) == (1, 1, 0)
    before, after = IndexReader(index), IndexReader(target)
    old = [i for i, p in enumerate(before.images["path"]) if p == "clip.mp4"]
    new = [i for i, p in enumerate(after.images["path"]) if p == "holiday.mp4"]
    assert list(after.images["frame_time"][new]) == list(before.images["frame_time"][old])
    assert np.array_equal(after.global_vectors[new], before.global_vectors[old])
    (copy / "holiday.mp4").unlink()
    report = build_index(copy, target, CONFIG, encoder=encoder)
    assert report.removed == 1 and "holiday.mp4" not in set(IndexReader(target).images["path"])


def test_an_interrupted_run_resumes_with_whole_videos(library, tmp_path, encoder, monkeypatch):
    from harmosearch.indexing import build
    from harmosearch.indexing.engines import local

    photos, index, _ = library
    copy = tmp_path / "photos"
    shutil.copytree(photos, copy)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "CHUNK", 1)  # every file staged as soon as it is encoded
    with monkeypatch.context() as m:
        m.setattr(build, "write_generation", interrupted)
        with pytest.raises(KeyboardInterrupt):
            build_index(copy, tmp_path / "index", CONFIG, encoder=encoder)
    report = build_index(copy, tmp_path / "index", CONFIG, encoder=encoder)
    assert (report.resumed, report.encoded, report.frames) == (5, 0, 4)
    before, after = IndexReader(index), IndexReader(tmp_path / "index")
    assert list(after.images["path"]) == list(before.images["path"])
    np.testing.assert_array_equal(after.images["frame_time"], before.images["frame_time"])
    np.testing.assert_array_equal(after.global_vectors, before.global_vectors)


def test_videos_without_pyav_are_skipped_unhashed_with_the_extra_named(tmp_path, encoder, monkeypatch):
    from harmosearch.indexing import plan

    photos = tmp_path / "photos"
    photos.mkdir()
    scene(("blue", "square", 60, 60)).save(photos / "a.jpg")
    for name in ("one.mp4", "two.mov"):
        (photos / name).write_bytes(b"never read")
    hashed = []

    def sha256_file(path):
        if path.parent == photos:  # not the index's own files
            hashed.append(path.name)
        return real_hash(path)

    real_hash = plan.sha256_file
    monkeypatch.setattr(plan, "sha256_file", sha256_file)
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    report = build_index(photos, tmp_path / "index", CONFIG, encoder=encoder)
    assert report.skipped == [(name, "videos need PyAV; install harmosearch[video]") for name in ("one.mp4", "two.mov")]
    assert hashed == ["a.jpg"] and report.images == 1


def test_a_query_finds_the_video_at_the_time_the_object_appears(library, encoder):
    _, index, _ = library
    response = Index(index, CONFIG, encoder=encoder).search("red circle", k=3)
    best = response.results[0]
    assert best.path == "clip.mp4" and best.frame_time in (APPEARS, 4.0)
    assert [r.path for r in response.results].count("clip.mp4") == 1  # a video appears once, at its best frame
    box = best.lexemes[0].box
    assert 160 - 38 - 16 <= (box[0] + box[2]) / 2 <= 160 + 38 + 16 and 150 - 54 <= (box[1] + box[3]) / 2 <= 150 + 54
    assert best.to_dict()["frame_time"] == best.frame_time


def test_cli_shows_the_frame_time_and_draws_on_that_frame(library, tmp_path):
    _, index, _ = library
    result = run_cli("query", "red circle", "--index", str(index), "-k", "2")
    assert result.returncode == 0, result.stderr
    assert "clip.mp4 @ 0:02" in result.stdout or "clip.mp4 @ 0:04" in result.stdout
    result = run_cli(
        "query", "red circle", "--index", str(index), "-k", "1", "--json", "--save-annotated", str(tmp_path)
    )
    first = json.loads(result.stdout)["results"][0]
    assert first["path"] == "clip.mp4" and first["frame_time"] in (APPEARS, 4.0)
    drawn = next(tmp_path.glob("01_clip_at*.png"))
    pixels = np.asarray(Image.open(drawn).convert("RGB"))
    scale = pixels.shape[1] / SIDE  # pictures are drawn at least 384 pixels wide
    red = pixels[round(150 * scale), round(160 * scale)]
    assert red[0] > 180 and red[1] < 80  # the frame with the circle, not the first frame


def search_paths(index, encoder, **filters):
    response = Index(index, CONFIG, encoder=encoder).search("a photo", k=20, **filters)
    return sorted(r.path for r in response.results), response


def test_date_and_folder_filters_give_exactly_the_files_that_pass(library, encoder):
    _, index, _ = library
    july, _ = search_paths(index, encoder, after="2024-07", before="2024-08")
    assert july == ["2024/summer/beach.jpg", "clip.mp4"]
    assert search_paths(index, encoder, after="2024-07-16")[0] == ["clip.mp4", "phone/IMG_0001.HEIC"]
    assert search_paths(index, encoder, before="2024")[0] == ["2023/winter/snow.jpg", "phone/sticker.avif"]
    assert search_paths(index, encoder, under=["2024"])[0] == ["2024/summer/beach.jpg"]
    assert search_paths(index, encoder, under=["./phone/", "2023/winter"])[0] == [
        "2023/winter/snow.jpg",
        "phone/IMG_0001.HEIC",
        "phone/sticker.avif",
    ]
    assert search_paths(index, encoder, under=["phone"], after="2024")[0] == ["phone/IMG_0001.HEIC"]
    empty, response = search_paths(index, encoder, under=["nowhere"])
    assert empty == [] and any("passes the filters" in w for w in response.warnings)
    by_date = Index(index, CONFIG, encoder=encoder).search("a photo", k=20, sort="date").results
    assert [r.path for r in by_date][:2] == ["phone/IMG_0001.HEIC", "clip.mp4"]  # newest first
    assert [r.rank for r in by_date] == list(range(1, len(by_date) + 1))
    with pytest.raises(QueryError, match="not earlier than"):
        search_paths(index, encoder, after="2024-08", before="2024-07")
    with pytest.raises(QueryError, match="inside the photo folder"):
        search_paths(index, encoder, under=["../elsewhere"])


def test_cli_filters(library):
    _, index, _ = library
    result = run_cli("query", "a photo", "--index", str(index), "--json", "--after", "2024-07", "--before", "2024-08")
    assert sorted(r["path"] for r in json.loads(result.stdout)["results"]) == ["2024/summer/beach.jpg", "clip.mp4"]
    result = run_cli("query", "a photo", "--index", str(index), "--json", "--under", "phone", "--under", "2024")
    paths = sorted(r["path"] for r in json.loads(result.stdout)["results"])
    assert paths == ["2024/summer/beach.jpg", "phone/IMG_0001.HEIC", "phone/sticker.avif"]
    result = run_cli("query", "a photo", "--index", str(index), "--after", "last summer")
    assert result.returncode == 2 and result.stderr.startswith("error: cannot read the date 'last summer'")


def test_weak_results_and_min_score_auto_on_the_bundled_model(library):
    _, index, _ = library
    result = run_cli("query", "purple ring", "--index", str(index), "-k", "3")
    assert result.returncode == 0, result.stderr
    assert "no confident match for 'purple ring'" in result.stdout and "weak" in result.stdout
    result = run_cli("query", "purple ring", "--index", str(index), "--min-score", "auto", "--json")
    payload = json.loads(result.stdout)
    assert payload["results"] == [] and payload["confident_match"] is False
    result = run_cli("query", "red circle", "--index", str(index), "-k", "3", "--json")
    payload = json.loads(result.stdout)
    assert payload["confident_match"] is True and payload["results"][0]["confident"] is True
    photo = index.parent / "photos" / "2024" / "summer" / "beach.jpg"
    result = run_cli("query", "--image", str(photo), "--index", str(index), "-k", "1", "--json")
    assert "warning: queries with an image are not calibrated" in result.stderr
    assert json.loads(result.stdout)["results"][0]["confident"] is None
    result = run_cli("query", "--image", str(photo), "--index", str(index), "--min-score", "auto")
    assert result.returncode == 2 and "--image" in result.stderr and "not calibrated" in result.stderr
    toml = index.parent / "auto.toml"
    toml.write_text('[search]\nmin_score = "auto"\n')  # a default for text queries
    result = run_cli("--config", str(toml), "query", "--image", str(photo), "--index", str(index), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["results"][0]["path"] == "2024/summer/beach.jpg"
    result = run_cli("--config", str(toml), "query", "purple ring", "--index", str(index), "--json")
    assert json.loads(result.stdout)["results"] == []


def test_dupes_finds_the_planted_groups_among_the_stills(tmp_path, encoder):
    photos = tmp_path / "photos"
    (photos / "backup").mkdir(parents=True)
    originals = {
        "a.jpg": scene(("blue", "square", 60, 60), ("yellow", "star", 160, 150)),
        "b.jpg": scene(("green", "ring", 90, 140)),
        "c.jpg": scene(("orange", "cross", 150, 60), ("black", "triangle", 60, 160)),
    }
    for name, picture in originals.items():
        picture.save(photos / name, quality=95)
    shutil.copyfile(photos / "a.jpg", photos / "backup" / "a.jpg")  # an exact copy
    originals["a.jpg"].resize((112, 112), Image.LANCZOS).save(photos / "a_small.png")  # resized
    shutil.copyfile(photos / "b.jpg", photos / "backup" / "b.jpg")
    # Another shot of c: the triangle moved. Its vectors are close; its pixels are not.
    scene(("orange", "cross", 150, 60), ("black", "triangle", 160, 160)).save(photos / "c_moved.jpg", quality=95)
    write_video(photos / "still.mp4", originals["b.jpg"], originals["b.jpg"])  # frames are never duplicates
    build_index(photos, tmp_path / "index", CONFIG, encoder=encoder)
    result = run_cli("dupes", str(tmp_path / "index"), "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    groups = [(g["kind"], g["keeper"], sorted(g["members"])) for g in payload["groups"]]
    assert groups == [
        ("near", "a.jpg", ["a.jpg", "a_small.png", "backup/a.jpg"]),
        ("exact", "b.jpg", ["b.jpg", "backup/b.jpg"]),
    ]
    assert payload["stills"] == 7
    assert payload["removable_bytes"] == sum(
        (photos / p).stat().st_size for p in ("backup/a.jpg", "a_small.png", "backup/b.jpg")
    )
    table = run_cli("dupes", str(tmp_path / "index"))
    assert "2 groups among 7 photos" in table.stdout and "backup/b.jpg" in table.stdout


def test_the_default_model_is_a_pretrained_class_token_vit_that_env_and_file_can_change(tmp_path):
    from harmosearch.config import shapes_model_unless_named
    from harmosearch.model.clip_adapter import architecture_config

    name = DEFAULT_MODEL.split(":")[0]
    vision = architecture_config(name)["vision_cfg"]
    assert vision["patch_size"] == 16 and not {"attentional_pool", "global_average_pool"} & set(vision)
    assert load_config(environ={}).encoder.model == DEFAULT_MODEL
    assert load_config(environ={"HARMOSEARCH_MODEL": "local-dir:/m"}).encoder.model == "local-dir:/m"
    (tmp_path / "c.toml").write_text('[encoder]\nmodel = "ViT-B-32:openai"\n')
    assert load_config(tmp_path / "c.toml", environ={}).encoder.model == "ViT-B-32:openai"
    # demo, bench and train start from the bundled model unless a model was named
    assert shapes_model_unless_named(load_config(environ={})).encoder.model == SHAPES_MODEL
    named = load_config(environ={"HARMOSEARCH_MODEL": "local-dir:/m"})
    assert shapes_model_unless_named(named).encoder.model == "local-dir:/m"


def test_index_and_query_load_the_default_model_through_open_clip(tmp_path, monkeypatch, encoder):
    """Weights cannot be downloaded here: open_clip's factory hands out the bundled model's
    network for the default spec (trained, so that each query has one right photo among
    several), and the index records the default spec."""
    import open_clip

    name, tag = DEFAULT_MODEL.split(":")
    asked = []

    def create_model(model_name, pretrained=None, **kwargs):
        asked.append((model_name, pretrained))
        return encoder.model

    monkeypatch.setattr(open_clip, "create_model", create_model)
    monkeypatch.setattr(open_clip, "get_tokenizer", lambda model_name: encoder.tokenizer)
    monkeypatch.setattr(loading, "hub_reachable", lambda: True)  # as if online: the factory "downloads"
    photos = tmp_path / "photos"
    photos.mkdir()
    right = {
        "blue square": scene(("blue", "square", 60, 60)),
        "red circle": scene(("red", "circle", 150, 90)),
        "green triangle": scene(("green", "triangle", 100, 160)),
        "yellow star": scene(("yellow", "star", 160, 160)),
    }
    for query, picture in right.items():
        picture.save(photos / f"{query.replace(' ', '_')}.jpg", quality=95)
    config = load_config(overrides={"encoder.device": "cpu", "index.workers": 0}, environ={})
    report = build_index(photos, tmp_path / "index", config)
    assert report.model == DEFAULT_MODEL and read_manifest(tmp_path / "index")["encoder"]["spec"] == DEFAULT_MODEL
    index = Index(tmp_path / "index", config)
    for query in right:
        ranked = [r.path for r in index.search(query, k=4).results]
        assert sorted(ranked) == sorted(p.name for p in photos.iterdir())
        assert ranked[0] == f"{query.replace(' ', '_')}.jpg", (query, ranked)
    assert asked == [(name, tag)] * 2


@pytest.mark.parametrize("offline", ["hub on a closed port", "HF_HUB_OFFLINE"])
def test_offline_the_default_model_fails_in_one_line_that_names_the_alternatives(tmp_path, offline):
    """A first run without a connection: one line within seconds, no retries or library warnings.
    The hub's address is a local port that nothing listens on (bound here, never listening), so
    the test needs no network and no name lookup; or the user said HF_HUB_OFFLINE."""
    photos = tmp_path / "photos"
    photos.mkdir()
    scene(("blue", "square", 60, 60)).save(photos / "a.jpg")
    env = {"HF_HOME": str(tmp_path / "empty-cache"), "HARMOSEARCH_MODEL": "", "HF_HUB_OFFLINE": "1"}
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        if offline == "hub on a closed port":
            port = closed.getsockname()[1]
            env |= {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": f"http://127.0.0.1:{port}", "NO_PROXY": "127.0.0.1"}
        started = time.monotonic()
        result = run_cli_process("index", str(photos), "--index", str(tmp_path / "index"), env=env)
        seconds = time.monotonic() - started
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: could not fetch model '{DEFAULT_MODEL}' (the default model)")
    assert "--model harmo-mix" in lines[0] and "local-dir:PATH" in lines[0]
    assert seconds < 10, f"took {seconds:.1f} s"


def run_cli(*args):
    """`harmosearch ARGS`, run in this process: the model loads in a second, where a new process
    first spends several importing torch (tests/test_cli_fuzz.py runs commands in real processes)."""
    outcome = invoke(list(args))
    return subprocess.CompletedProcess(args, outcome.code, outcome.stdout, outcome.stderr)


def run_cli_process(*args, env=None):
    """`harmosearch ARGS` in a process of its own, for what is decided when it starts (the
    Hugging Face offline switch)."""
    return subprocess.run(
        [sys.executable, "-m", "harmosearch", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_many_files_skipped_for_one_reason_share_a_line(capsys):
    from harmosearch.cli.index import _print_skipped

    no_pyav = "videos need PyAV; install harmosearch[video]"
    _print_skipped([(f"v{i}.mp4", no_pyav) for i in range(5)] + [("a.jpg", "cannot decode image: truncated")])
    assert capsys.readouterr().err.splitlines() == [
        f"skipped 5 files (v0.mp4, v1.mp4, v2.mp4, ...): {no_pyav}",
        "skipped a.jpg: cannot decode image: truncated",
    ]
