"""Slow, obvious implementations that the optimised region code is checked against."""

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import nms

from harmosearch.regions import proposals as regions
from harmosearch.regions.proposals import SEGMENT, USER_BOX


def segment_boxes_one_by_one(dense, thresholds, max_fraction=0.7):
    """One dense map [D, gh, gw]: union-find over joined neighbours, one threshold at a time."""
    _, gh, gw = dense.shape
    unit = F.normalize(dense.float(), dim=0)
    right = (unit[:, :, :-1] * unit[:, :, 1:]).sum(0)
    down = (unit[:, :-1, :] * unit[:, 1:, :]).sum(0)
    found = set()
    for t in thresholds:
        parent = list(range(gh * gw))

        def root(i, parent=parent):
            while parent[i] != i:
                i = parent[i]
            return i

        for y in range(gh):
            for x in range(gw):
                if x + 1 < gw and right[y, x] >= t:
                    parent[root(y * gw + x)] = root(y * gw + x + 1)
                if y + 1 < gh and down[y, x] >= t:
                    parent[root(y * gw + x)] = root((y + 1) * gw + x)
        groups = {}
        for i in range(gh * gw):
            groups.setdefault(root(i), []).append(i)
        for cells in groups.values():
            if 2 <= len(cells) <= max_fraction * gh * gw:
                ys, xs = [c // gw for c in cells], [c % gw for c in cells]
                found.add((min(xs), min(ys), max(xs) + 1, max(ys) + 1))
    return torch.tensor(sorted(found), dtype=torch.float32).reshape(-1, 4)


def pixel_segments_one_by_one(image, width, height, scales):
    """One decoded picture: shrunk to regions.PIXEL_SIDE on its short side (never enlarged),
    segmented at each of `scales`, then each segment's pixels found one label at a
    time; boxes filtered and scaled to the full width x height."""
    from skimage.segmentation import felzenszwalb

    short = min(image.size)
    if short > regions.PIXEL_SIDE:
        factor = regions.PIXEL_SIDE / short
        image = image.resize((round(image.width * factor), round(image.height * factor)), resample=2, reducing_gap=2.0)
    pixels = np.asarray(image.convert("RGB"))
    rows, cols = pixels.shape[:2]
    found = set()
    for scale in scales:
        labels = felzenszwalb(pixels, scale=scale, sigma=regions.PIXEL_SIGMA, min_size=regions.PIXEL_MIN_SIZE)
        for label in np.unique(labels):
            ys, xs = np.nonzero(labels == label)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            if min(x1 - x0, y1 - y0) < regions.PIXEL_MIN_BOX:
                continue
            if (x1 - x0) * (y1 - y0) > regions.PIXEL_MAX_FRACTION * rows * cols:
                continue
            found.add((x0 * width / cols, y0 * height / rows, x1 * width / cols, y1 * height / rows))
    return np.array(sorted(found), dtype=np.float32).reshape(-1, 4)


def select_one_by_one(boxes, scales, vectors, global_vector, config):
    """One image: rank, torchvision NMS, then a Python loop dropping near-duplicate vectors."""
    n = len(boxes)
    sc = scales.numpy()
    distinct = (1.0 - vectors @ global_vector).numpy()
    priority = distinct + (sc == USER_BOX) * 10 + (sc >= 1.0) * 5 + (sc == SEGMENT) * 2
    order = np.lexsort((np.arange(n), -np.round(priority.astype(np.float64) * 1000)))
    ranks = np.empty(n, dtype=np.float32)
    ranks[order] = np.arange(n, 0, -1, dtype=np.float32)
    keep = nms(boxes, torch.from_numpy(ranks), config.nms_iou).numpy()
    chosen = []
    for row in keep:
        if len(chosen) >= config.max_regions:
            break
        similar = any(float(vectors[row] @ vectors[c]) > config.dedup_cosine for c in chosen)
        if sc[row] != USER_BOX and similar:
            continue
        chosen.append(row)
    return sorted(chosen)
