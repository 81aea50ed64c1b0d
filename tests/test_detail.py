"""regions.detail "high": region vectors pooled from a second pass at a larger input size."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from harmosearch.clip_adapter import eval_transform
from harmosearch.config import load_config
from harmosearch.encoder import vision_forward
from harmosearch.errors import IndexStoreError
from harmosearch.indexing import build_index
from harmosearch.pipeline import encode_files
from harmosearch.regions import HIGH_DETAIL_SCALE, detail_size, image_regions
from harmosearch.store import read_manifest

from .conftest import TEST_MODEL


def config_with(detail):
    return load_config(
        overrides={"encoder.model": TEST_MODEL, "encoder.device": "cpu", "index.workers": 0, "regions.detail": detail}
    )


def test_detail_size_is_whole_patches():
    assert detail_size("normal", 112, 8) is None
    assert detail_size("high", 112, 8) == 168 == 112 * HIGH_DETAIL_SCALE
    assert detail_size("high", 32, 8) == 48
    assert detail_size("high", 224, 16) % 16 == 0


def test_high_detail_pools_regions_from_the_larger_pass(scenes, test_encoder):
    """Each image by hand: the global vector from the model's own pass (as at normal detail), the
    regions from a forward pass on the image transformed by open_clip to the larger size, with
    that pass's grid, and ground-truth probes pooled from it too."""
    from harmosearch.regions import pool, to_grid

    paths = sorted((scenes / "images").glob("*.png"))[:3]
    probes = [[(5.0, 5.0, 60.0, 60.0)], [(100.0, 20.0, 200.0, 120.0)], [(0.0, 0.0, 224.0, 224.0)]]
    config = config_with("high")
    normal = dict(encode_files(paths, test_encoder, config_with("normal"), None, probes))
    high = dict(encode_files(paths, test_encoder, config, None, probes))
    size = detail_size("high", test_encoder.image_size, test_encoder.image_size // test_encoder.grid[0])
    resize = test_encoder.config.resize
    for i, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        np.testing.assert_allclose(high[i].global_vector, normal[i].global_vector, atol=1e-6)
        with torch.no_grad():
            g, _ = vision_forward(test_encoder.model, test_encoder.transform(image)[None], "value")
            _, dense = vision_forward(
                test_encoder.model, eval_transform(test_encoder.model, resize, size)(image)[None], "value"
            )
        g = torch.nn.functional.normalize(g, dim=-1)
        grid = tuple(dense.shape[-2:])
        assert grid[0] > test_encoder.grid[0]
        (expected,) = image_regions(dense, g, [image.size], grid, size, resize, config.regions)
        np.testing.assert_allclose(high[i].boxes, expected.boxes.numpy(), atol=1e-4)
        np.testing.assert_allclose(high[i].vectors, expected.vectors.numpy(), atol=1e-4)
        box = to_grid(torch.tensor(probes[i]), *image.size, grid, size, resize)
        np.testing.assert_allclose(high[i].probes, pool(dense, [box])[0].numpy(), atol=1e-4)


def test_an_index_keeps_its_detail_and_old_indexes_count_as_normal(scenes, tmp_path, test_encoder):
    build_index(scenes / "images", tmp_path / "high", config_with("high"), encoder=test_encoder)
    assert read_manifest(tmp_path / "high")["config"]["regions"]["detail"] == "high"
    with pytest.raises(IndexStoreError, match="other region settings"):
        build_index(scenes / "images", tmp_path / "high", config_with("normal"), encoder=test_encoder)
    build_index(scenes / "images", tmp_path / "old", config_with("normal"), encoder=test_encoder)
    manifest_file = tmp_path / "old" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["config"]["regions"]["detail"]  # as written before regions.detail existed
    manifest_file.write_text(json.dumps(manifest))
    report = build_index(scenes / "images", tmp_path / "old", config_with("normal"), encoder=test_encoder)
    assert not report.committed
