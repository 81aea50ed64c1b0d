"""regions.detail "high": region vectors pooled from a second pass at a larger input size."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou, roi_align

from harmosearch.config import RegionConfig, load_config
from harmosearch.errors import IndexStoreError
from harmosearch.indexing import build_index
from harmosearch.indexing.encode import encode_files
from harmosearch.model.clip_adapter import eval_transform
from harmosearch.model.encoder import vision_forward
from harmosearch.regions.proposals import (
    FINE_BELOW,
    HIGH_DETAIL_REGIONS,
    HIGH_DETAIL_SCALE,
    HIGH_DETAIL_WINDOWS,
    SEGMENT,
    detail_size,
    high_detail_cap,
    pixel_segment_boxes,
    pool,
    pool_detailed,
    segment_boxes,
    select,
    to_grid,
    window_boxes,
)
from harmosearch.store import read_manifest

from .conftest import TEST_MODEL
from .references import pixel_segments_one_by_one


def config_with(detail):
    return load_config(
        overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0, "regions.detail": detail}
    )


def test_detail_size_is_whole_patches():
    assert detail_size("normal", 112, 8) is None
    assert detail_size("high", 112, 8) == 168 == 112 * HIGH_DETAIL_SCALE
    assert detail_size("high", 32, 8) == 48
    assert detail_size("high", 224, 16) % 16 == 0


def pool_by_loop(dense, fine, boxes):
    """Each box alone: RoIAlign on the model's map, or, when its longer side is under FINE_BELOW
    cells, on the fine map with the box scaled to that map's grid (no fine map: all on the model's)."""
    out = []
    ratio = fine.shape[-1] / dense.shape[-1] if fine is not None else 1.0
    for box in boxes.tolist():
        small = fine is not None and max(box[2] - box[0], box[3] - box[1]) < FINE_BELOW
        source, scaled = (fine, [v * ratio for v in box]) if small else (dense, box)
        pooled = roi_align(source, [torch.tensor([scaled])], 1, 1.0, 2, True).flatten(1)
        out.append(torch.nn.functional.normalize(pooled, dim=-1)[0])
    return torch.stack(out) if out else torch.zeros((0, dense.shape[1]))


def test_pooling_takes_small_boxes_from_the_fine_map():
    rng = torch.Generator().manual_seed(0)
    dense, fine = torch.randn(2, 8, 14, 14, generator=rng), torch.randn(2, 8, 21, 21, generator=rng)
    boxes = [torch.tensor([[0, 0, 2.9, 1.0], [1, 1, 4, 3], [0, 0, 14, 14], [5.5, 6, 8, 8.99]]), torch.zeros((0, 4))]
    got = pool_detailed(dense, boxes, fine)
    for b in range(2):
        assert torch.allclose(got[b], pool_by_loop(dense[b : b + 1], fine[b : b + 1], boxes[b]), atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(pool_detailed(dense, boxes), pool(dense, boxes), strict=True))


def test_high_detail_indexing_by_hand(scenes, test_encoder):
    """Each image by hand: the global vector and the model's map from its own pass (as at normal
    detail), a fine map from a forward pass on the image transformed by open_clip to the larger
    size; the proposals at normal detail plus HIGH_DETAIL_WINDOWS, pooled by the loop above and
    selected as usual; ground-truth probes pooled by the loop too."""
    paths = sorted((scenes / "images").glob("*.png"))[:3]
    probes = [[(5.0, 5.0, 30.0, 30.0), (5.0, 5.0, 60.0, 60.0)], [(100.0, 20.0, 200.0, 120.0)], [(0.0, 0.0, 9.0, 9.0)]]
    config = config_with("high")
    normal = dict(encode_files(paths, test_encoder, config_with("normal"), None, probes))
    high = dict(encode_files(paths, test_encoder, config, None, probes))
    size = detail_size("high", test_encoder.image_size, test_encoder.image_size // test_encoder.grid[0])
    resize, grid, own_size = test_encoder.config.resize, test_encoder.grid, test_encoder.image_size
    wider = replace(
        config.regions,
        scales=config.regions.scales + HIGH_DETAIL_WINDOWS,
        max_regions=high_detail_cap(config.regions.max_regions),
    )
    for i, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        np.testing.assert_allclose(high[i].global_vector, normal[i].global_vector, atol=1e-6)
        with torch.no_grad():
            g, dense = vision_forward(test_encoder.model, test_encoder.transform(image)[None], "value")
            fine_pixels = eval_transform(test_encoder.model, resize, size)(image)[None]
            _, fine = vision_forward(test_encoder.model, fine_pixels, "value")
        assert fine.shape[-1] > dense.shape[-1]
        g = torch.nn.functional.normalize(g, dim=-1)
        # Boxes around pixel segments take the place of the dense map's segments.
        pixel_segments = torch.from_numpy(pixel_segments_one_by_one(image, *image.size, config.regions.pixel_segments))
        assert len(pixel_segments) and len(segment_boxes(dense, config.regions.segments)[0])
        windows, scales = window_boxes(*image.size, wider.scales, wider.overlap)
        pixel_boxes = torch.cat([pixel_segments, windows])
        grid_boxes = to_grid(pixel_boxes, *image.size, grid, own_size, resize)
        labels = torch.cat([torch.full((len(pixel_segments),), SEGMENT), scales])
        (expected,) = select([(pixel_boxes, labels)], [pool_by_loop(dense, fine, grid_boxes)], g, wider)
        np.testing.assert_allclose(high[i].boxes, expected.boxes.numpy(), atol=1e-4)
        np.testing.assert_allclose(high[i].vectors, expected.vectors.numpy(), atol=1e-4)
        box = to_grid(torch.tensor(probes[i]), *image.size, grid, own_size, resize)
        np.testing.assert_allclose(high[i].probes, pool_by_loop(dense, fine, box).numpy(), atol=1e-4)
        # Normal detail: the same pixel segments (in place of the dense map's) and the plain
        # windows, pooled from the model's own map.
        windows, scales = window_boxes(*image.size, config.regions.scales, config.regions.overlap)
        pixel_boxes = torch.cat([pixel_segments, windows])
        grid_boxes = to_grid(pixel_boxes, *image.size, grid, own_size, resize)
        labels = torch.cat([torch.full((len(pixel_segments),), SEGMENT), scales])
        (expected,) = select([(pixel_boxes, labels)], [pool_by_loop(dense, None, grid_boxes)], g, config.regions)
        np.testing.assert_allclose(normal[i].boxes, expected.boxes.numpy(), atol=1e-4)
        np.testing.assert_allclose(normal[i].vectors, expected.vectors.numpy(), atol=1e-4)


@pytest.mark.parametrize("size", [(224, 224), (448, 336), (90, 150)])
def test_pixel_segments_equal_the_label_by_label_reference(scenes, size):
    """Pictures larger than PIXEL_SIDE are shrunk first, smaller ones are not enlarged; the boxes
    are in pixels of the full picture, which may be larger than the decoded one (draft decoding)."""
    path = sorted((scenes / "images").glob("*.png"))[1]
    image = Image.open(path).convert("RGB").resize(size)
    scales = RegionConfig().pixel_segments
    for full in (size, (size[0] * 3, size[1] * 3)):
        got = pixel_segment_boxes(image, *full, scales)
        expected = pixel_segments_one_by_one(image, *full, scales)
        assert got.dtype == np.float32 and len(got) == len(expected) > 0
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_pixel_segments_box_a_small_object_on_a_speckled_ground():
    """A 24 x 18 px red rectangle in a 640 x 480 speckled grey photo (under a cell of a 14 x 14
    map) gets a box that fits it."""
    rng = np.random.default_rng(0)
    pixels = (128 + rng.integers(-12, 13, (480, 640, 1))).repeat(3, axis=2).astype(np.uint8)
    pixels[300:318, 400:424] = (200, 30, 30)
    boxes = pixel_segment_boxes(Image.fromarray(pixels), 640, 480, RegionConfig().pixel_segments)
    truth = torch.tensor([[400.0, 300.0, 424.0, 318.0]])
    assert float(box_iou(truth, torch.from_numpy(boxes)).max()) >= 0.7
    assert len(boxes) < 50  # the speckles are not boxed one by one


def test_an_index_keeps_its_detail_and_old_indexes_count_as_normal(scenes, tmp_path, test_encoder):
    build_index(scenes / "images", tmp_path / "high", config_with("high"), encoder=test_encoder)
    assert read_manifest(tmp_path / "high")["config"]["regions"]["detail"] == "high"
    with pytest.raises(IndexStoreError, match="other region settings"):
        build_index(scenes / "images", tmp_path / "high", config_with("normal"), encoder=test_encoder)
    build_index(scenes / "images", tmp_path / "old", config_with("normal"), encoder=test_encoder)
    manifest_file = tmp_path / "old" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    assert manifest["config"]["regions"]["pixel_segments"] == list(RegionConfig().pixel_segments)
    del manifest["config"]["regions"]["detail"]  # as written before regions.detail existed
    del manifest["config"]["regions"]["pixel_segments"]  # ... and before normal detail had pixel segments
    manifest_file.write_text(json.dumps(manifest))
    report = build_index(scenes / "images", tmp_path / "old", config_with("normal"), encoder=test_encoder)
    assert not report.committed  # its own settings kept: nothing to re-encode, no --rebuild asked


def test_a_high_detail_index_of_older_proposals_must_be_rebuilt(scenes, tmp_path, test_encoder):
    """A high-detail index records its proposal constants; one without them (written before
    pixel segments existed) or with others is refused on update, with a one-line reason."""
    from harmosearch.regions.proposals import proposal_constants

    build_index(scenes / "images", tmp_path / "high", config_with("high"), encoder=test_encoder)
    manifest_file = tmp_path / "high" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    assert manifest["proposals"] == json.loads(json.dumps(proposal_constants("high")))
    report = build_index(scenes / "images", tmp_path / "high", config_with("high"), encoder=test_encoder)
    assert not report.committed  # nothing changed: no error, nothing written
    # Before regions.pixel_segments, the scales were the second of the pixel constants: such an
    # index keeps its own scales on update instead of being re-encoded.
    legacy = json.loads(json.dumps(manifest))
    legacy["proposals"]["pixels"].insert(1, [300.0])
    del legacy["config"]["regions"]["pixel_segments"]
    manifest_file.write_text(json.dumps(legacy))
    report = build_index(scenes / "images", tmp_path / "high", config_with("high"), encoder=test_encoder)
    assert not report.committed
    for older in ({k: v for k, v in manifest.items() if k != "proposals"}, {**manifest, "proposals": {"pixels": []}}):
        manifest_file.write_text(json.dumps(older))
        with pytest.raises(IndexStoreError, match=r"region proposals of an older harmosearch; re-run with --rebuild"):
            build_index(scenes / "images", tmp_path / "high", config_with("high"), encoder=test_encoder)
    build_index(scenes / "images", tmp_path / "normal", config_with("normal"), encoder=test_encoder)
    assert "proposals" not in read_manifest(tmp_path / "normal")


def test_a_high_detail_index_that_kept_twice_its_cap_is_kept_where_a_cap_keeps_as_many(scenes, tmp_path, test_encoder):
    """Before high detail kept 1.5 times regions.max_regions it kept twice it: such an index is
    read as the cap that keeps as many regions now (96 then: 128 now) and updated without
    re-encoding; where no cap keeps as many (5 then: 10), it must be rebuilt. A new picture then
    writes the cap as read, with today's constants."""
    import shutil

    photos = tmp_path / "photos"
    photos.mkdir()
    pictures = sorted((scenes / "images").glob("*.png"))
    for picture in pictures[:3]:
        shutil.copy(picture, photos)
    build_index(photos, tmp_path / "high", config_with("high"), encoder=test_encoder)
    manifest_file = tmp_path / "high" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    assert manifest["config"]["regions"]["max_regions"] == 128 and manifest["proposals"]["high"][3] == 1.5
    for then, fits in ((96, True), (97, True), (5, False)):
        legacy = json.loads(json.dumps(manifest))
        legacy["config"]["regions"]["max_regions"] = then
        legacy["proposals"]["high"][3] = 2
        manifest_file.write_text(json.dumps(legacy))
        if fits:
            report = build_index(photos, tmp_path / "high", config_with("high"), encoder=test_encoder)
            assert not report.committed
            continue
        with pytest.raises(IndexStoreError, match=r"region proposals of an older harmosearch; re-run with --rebuild"):
            build_index(photos, tmp_path / "high", config_with("high"), encoder=test_encoder)
    legacy["config"]["regions"]["max_regions"] = 96
    manifest_file.write_text(json.dumps(legacy))
    shutil.copy(pictures[3], photos)
    report = build_index(photos, tmp_path / "high", config_with("high"), encoder=test_encoder)
    assert report.committed and report.encoded == 1 and report.resumed == 0
    written = read_manifest(tmp_path / "high")
    assert written["config"]["regions"]["max_regions"] == 128 and written["proposals"]["high"][3] == 1.5


def test_twice_a_cap_then_is_as_many_regions_now_or_left_as_built():
    from harmosearch.indexing.build import _older_high_cap

    proposals = {"high": [HIGH_DETAIL_SCALE, FINE_BELOW, list(HIGH_DETAIL_WINDOWS), 2]}
    left = []
    for then in range(1, 301):
        regions, upgraded = _older_high_cap({"max_regions": then, "detail": "high"}, proposals)
        if upgraded == proposals:
            assert regions["max_regions"] == then
            assert all(high_detail_cap(cap) != 2 * then for cap in range(1, 2 * then))  # none keeps as many
            left.append(then)
        else:
            assert high_detail_cap(regions["max_regions"]) == 2 * then
            assert upgraded["high"] == [*proposals["high"][:3], HIGH_DETAIL_REGIONS]
    assert left == list(range(2, 301, 3))  # no cap keeps twice 3k + 2
