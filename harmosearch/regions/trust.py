"""Region trust: how far an index's region vectors can be believed, measured on its own images.

A model whose regions were trained with HarmoCLIP's losses pools, for a box, a vector that says
what is inside the box; the dense map of a stock CLIP need not. Fusing regions that carry no
signal ranks worse than the global vector alone, so fusion weighs the region part by how much
signal they carry. The measurement needs no labels, only the index's images and its encoder:

1. a deterministic sample of up to TRUST_IMAGES images (evenly spaced over the index's rows);
2. on each, up to TRUST_BOXES of its region boxes, covering MIN_SHARE to MAX_SHARE of the picture
   and overlapping one another at most MAX_IOU (picked in a fixed pseudo-random order);
3. each box shown alone: the picture with everything outside the square around the box filled
   with the picture's mean colour, encoded as a whole picture by the same encoder (the box keeps
   its place and size, so the model sees it as it sees a whole picture's objects; a crop blown up
   to the model's input shows objects at sizes it may never have seen);
4. both sides are seen through the words a query can use: each vector becomes its cosines with
   the shipped everyday vocabulary's phrases (search/contrast.py, ~1,500 things), so that what
   no text can ask for (the texture of a wall, the grain of a photograph) does not count;
5. each region ranks its own picture's boxes-alone by the cosine of those phrase scores (both
   sides centred on their mean over the sample, which takes out the offset between pooled
   regions and whole pictures): trust is the mean reciprocal rank of its own, rescaled so that
   chance (a ranking that knows nothing) gives 0 and always first gives 1. Within one picture,
   so a region that only tells which picture it is in (all a dense map untrained for regions
   may carry) gains nothing.

Version 1 compared the vectors themselves, on 16 pictures: on photographs it measured the
bundled harmo-mix and the global-loss stand-in harmo-tiny-gc alike (0.11 both on the photo
world's test scenes), although harmo-mix's regions lift its phrase search there from 0.45 to
0.59 when fully weighed. In phrase space, on 128 pictures of 300 validation scenes
(benchmarks/trust_measures.py, trust_measures.jsonl): random weights 0.04 (flat) and 0.09
(photo), harmo-tiny-gc 0.10 and 0.14, harmo-tiny 0.37 and 0.17, harmo-mix 0.37 and 0.24; on 16
pictures the same measure is too noisy to tell them apart (harmo-tiny-gc 0.21 on photographs).

Measuring every box alone costs as much as encoding six pictures per sampled image (163 s with
ViT-B-16 on a 2-core CPU for 128 pictures), and fusion only needs the weight trust gives on the
ramp below. So the sample grows TRUST_STEP pictures at a time from TRUST_FIRST, in an order whose
every prefix is spread evenly over the library, and stops once trust is TRUST_Z standard errors
(the pictures as the independent units) beyond the ramp. The rule (first look 32, z 3) was chosen
on validation scenes (benchmarks/trust_sequential.py, trust_sequential.jsonl): of a grid of first
looks 16-48 and z 2-4, z 2 gave weights off the full sample's by up to 0.36 in 1% of 200 random
orders; z 3 and 4 never changed one. On test scenes it measured 32-48 pictures of the
models whose regions were trained (flat world) and of random weights, all 128 where trust lies
near the ramp, and gave every weight of the full sample.

Fusion then uses the effective alpha 1 - (1 - alpha) * w, with w = region_weight(trust): 0 at or
below search.trust_low (the regions count for nothing: the ranking is --global-only's), 1 from
search.trust_high (the plain fused ranking), linear between. An index built before trust was
measured has none and ranks as before (w = 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from harmosearch.config import SearchConfig

TRUST_VERSION = 2  # 1: compared in the vectors' own space, on 16 pictures
FIRST_VERSION = 1  # of a trust stored without its version
TRUST_IMAGES = 128  # the most images sampled
TRUST_STEP = 16  # images added to the sample between two looks at it
TRUST_FIRST = 32  # images in the sample at the first look
TRUST_Z = 3.0  # the sample stops growing once trust is this many spreads beyond the ramp
TRUST_BOXES = 6  # region boxes per sampled image
MIN_SHARE, MAX_SHARE = 0.02, 0.5  # a sampled box's area as a share of its picture's
MAX_IOU = 0.3  # sampled boxes of one picture overlap at most this much
SEED = 0

# One picture of the index: (PIL image, its full width, its full height), the image possibly
# decoded at reduced scale; None when it cannot be read.
Picture = tuple[Any, int, int]


@dataclass(frozen=True)
class RegionTrust:
    """A measured region trust, as the index manifest keeps it."""

    trust: float  # in [0, 1]: 0 chance, 1 every region finds its own crop first
    mrr: float  # the raw mean reciprocal rank
    regions: int  # regions (and crops) sampled
    images: int  # images they came from
    seconds: float  # what the measurement took
    version: int = TRUST_VERSION
    spread: float | None = None  # trust's standard error over its pictures; None: not estimated

    def to_dict(self) -> dict[str, Any]:
        return {
            "trust": self.trust,
            "mrr": self.mrr,
            "regions": self.regions,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "version": self.version,
        } | ({} if self.spread is None else {"spread": round(self.spread, 4)})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegionTrust:
        return cls(
            float(data["trust"]),
            float(data["mrr"]),
            int(data["regions"]),
            int(data["images"]),
            float(data.get("seconds", 0.0)),
            int(data.get("version", FIRST_VERSION)),
            None if data.get("spread") is None else float(data["spread"]),
        )


def stored_trust(manifest: dict[str, Any]) -> RegionTrust | None:
    """The region trust an index's manifest records; None for an index built before it was measured."""
    data = manifest.get("region_trust")
    return RegionTrust.from_dict(data) if isinstance(data, dict) else None


def measured_the_current_way(data: Any) -> bool:
    """Whether a manifest's region_trust entry was measured as this version measures (an update
    measures any other again; None, a measurement that found nothing to sample, is not one)."""
    return isinstance(data, dict) and int(data.get("version", FIRST_VERSION)) == TRUST_VERSION


def region_weight(trust: RegionTrust | float | None, low: float, high: float) -> float:
    """The weight of the region part in fusion for this trust: 0 at or below `low`, 1 at or above
    `high`, linear between; 1 when trust was never measured (indexes made before it)."""
    if trust is None:
        return 1.0
    value = trust.trust if isinstance(trust, RegionTrust) else float(trust)
    if value >= high:
        return 1.0
    if value <= low:
        return 0.0
    return float((value - low) / (high - low))


def trusted_settings(settings: SearchConfig, weight: float) -> SearchConfig:
    """The search settings with the region part weighed by `weight`: every global weight alpha
    becomes 1 - (1 - alpha) * weight (alpha, phrase_alpha, refine_alpha), and the crops' weight in
    reordering is scaled by it. weight 1 returns the settings unchanged; weight 0 ranks as the
    global vector alone."""
    if weight >= 1.0:
        return settings
    weight = max(0.0, float(weight))

    def lifted(alpha: float) -> float:
        return 1.0 - (1.0 - alpha) * weight

    return replace(
        settings,
        alpha=lifted(settings.alpha),
        phrase_alpha=lifted(settings.phrase_alpha),
        refine_alpha=lifted(settings.refine_alpha),
        crop_weight=settings.crop_weight * weight,
    )


def weighed(settings: SearchConfig, trust: RegionTrust | None) -> SearchConfig:
    """The search settings of an index of this region trust (trusted_settings at region_weight,
    between settings.trust_low and settings.trust_high)."""
    return trusted_settings(settings, region_weight(trust, settings.trust_low, settings.trust_high))


def sample_images(n_images: int, count: int = TRUST_IMAGES) -> np.ndarray:
    """Up to `count` image rows evenly spaced over 0..n_images-1 (the same rows for the same index)."""
    if n_images <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n_images - 1, min(count, n_images)).round().astype(np.int64))


def sample_boxes(boxes: np.ndarray, width: float, height: float, seed: int, count: int = TRUST_BOXES) -> np.ndarray:
    """Row numbers of up to `count` of an image's boxes [R, 4] (pixels of its full size) fit for
    the measurement: covering MIN_SHARE..MAX_SHARE of it, overlapping at most MAX_IOU, picked in
    a pseudo-random order fixed by `seed`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    share = area / max(float(width) * float(height), 1.0)
    fit = np.flatnonzero((share >= MIN_SHARE) & (share <= MAX_SHARE))
    chosen: list[int] = []
    for row in np.random.default_rng(seed).permutation(fit):
        if all(_iou(boxes[row], boxes[other]) <= MAX_IOU for other in chosen):
            chosen.append(int(row))
            if len(chosen) == count:
                break
    return np.asarray(chosen, dtype=np.int64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def own_box_mrr(region_vectors: np.ndarray, alone_vectors: np.ndarray, picture_of: np.ndarray) -> tuple[float, float]:
    """(mean reciprocal rank, its chance value): region i ranks the boxes-alone of its own picture
    (picture_of [N]) by cosine with its vector, both centred on their mean over the sample; ties
    count against it. Chance is H_k / k for a picture of k sampled boxes, averaged over regions."""
    reciprocal, chance = reciprocal_ranks(region_vectors, alone_vectors, picture_of)
    return float(reciprocal.mean()), float(chance.mean())


def reciprocal_ranks(
    region_vectors: np.ndarray, alone_vectors: np.ndarray, picture_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per region [N]: the reciprocal rank of its own box alone among its picture's (own_box_mrr),
    and that rank's chance value."""
    r = _unit(_unit(region_vectors) - _unit(region_vectors).mean(axis=0))
    a = _unit(_unit(alone_vectors) - _unit(alone_vectors).mean(axis=0))
    reciprocal = np.zeros(len(picture_of))
    chance = np.zeros(len(picture_of))
    for picture in np.unique(picture_of):
        rows = np.flatnonzero(picture_of == picture)
        scores = r[rows] @ a[rows].T
        own = np.diag(scores)[:, None]
        reciprocal[rows] = 1.0 / (scores >= own).sum(axis=1)  # itself included: ties count against it
        chance[rows] = chance_mrr(len(rows))
    return reciprocal, chance


def phrase_space(vectors: np.ndarray, phrases: np.ndarray) -> np.ndarray:
    """Vectors [N, D] seen through `phrases` [K, D]: their cosines with each phrase [N, K]."""
    return _unit(vectors) @ phrases.T


def phrase_space_mrr(
    region_vectors: np.ndarray, alone_vectors: np.ndarray, picture_of: np.ndarray, phrases: np.ndarray
) -> tuple[float, float]:
    """own_box_mrr with both sides seen through `phrases` [K, D]: each vector replaced by its
    cosines with the phrases, so that a region and a box alone agree only in what text can ask."""
    return own_box_mrr(phrase_space(region_vectors, phrases), phrase_space(alone_vectors, phrases), picture_of)


def trust_estimate(
    region_phrases: np.ndarray, alone_phrases: np.ndarray, picture_of: np.ndarray
) -> tuple[float, float, float]:
    """(trust, mean reciprocal rank, spread) of a sample already seen through the phrases: trust
    is the MRR normalised against chance; spread its standard error, the pictures taken as the
    independent units (a picture's regions share its boxes, so they are not)."""
    reciprocal, chance = reciprocal_ranks(region_phrases, alone_phrases, picture_of)
    mrr, base = float(reciprocal.mean()), float(chance.mean())
    pictures, which = np.unique(picture_of, return_inverse=True)
    if len(pictures) < 2 or base >= 1.0:
        return normalised(mrr, base), mrr, float("inf")
    gain = reciprocal - chance  # over chance, per region
    residual = np.bincount(which, weights=gain - gain.mean(), minlength=len(pictures))
    n = len(pictures)
    spread = float(np.sqrt(n / (n - 1) * np.sum(residual**2)) / len(reciprocal) / (1.0 - base))
    return normalised(mrr, base), mrr, spread


def settled(trust: float, spread: float, ramp: tuple[float, float], z: float = TRUST_Z) -> bool:
    """Whether a trust measured with this spread lies clearly beyond the ramp (low, high): z spreads
    below low (weight 0 whatever more pictures say) or above high (weight 1)."""
    low, high = ramp
    return trust + z * spread <= low or trust - z * spread >= high


def chance_mrr(n: int) -> float:
    """The mean reciprocal rank of a random ranking of n: H_n / n."""
    return float(np.sum(1.0 / np.arange(1, n + 1)) / n) if n else 0.0


def normalised(mrr: float, chance: float) -> float:
    """mrr rescaled so that `chance` is 0 and 1 is 1, clipped to [0, 1]."""
    if chance >= 1.0:
        return 0.0
    return float(np.clip((mrr - chance) / (1.0 - chance), 0.0, 1.0))


def box_alone(image: Any, square: tuple[int, ...]) -> Any:
    """The picture with everything outside `square` (pixels of `image`) in its mean colour."""
    from PIL import Image, ImageStat

    rgb = image.convert("RGB")
    fill = tuple(round(v) for v in ImageStat.Stat(rgb).mean)
    out = Image.new("RGB", rgb.size, fill)
    x0, y0 = max(square[0], 0), max(square[1], 0)
    x1, y1 = min(square[2], rgb.width), min(square[3], rgb.height)
    if x1 > x0 and y1 > y0:
        out.paste(rgb.crop((x0, y0, x1, y1)), (x0, y0))
    return out


def measure_trust(
    encoder: Any,
    picture: Callable[[int], Picture | None],
    n_images: int,
    region_vectors: np.ndarray,
    boxes: np.ndarray,
    region_start: np.ndarray,
    phrases: np.ndarray | None = None,
    ramp: tuple[float, float] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> RegionTrust | None:
    """The region trust of an index's (or a benchmark's) images and encoder. picture(i) reads
    image i; region_vectors [R, D] as stored, boxes [R, 4] (pixels of the full image), image i's
    regions at rows region_start[i]:region_start[i + 1]; phrases: trust_phrases(encoder) when
    the caller has them already. With a ramp (search.trust_low, trust_high) the sample grows
    TRUST_STEP images at a time from TRUST_FIRST and stops once trust is settled beyond it (the
    weight it gives is then sure; settled); without one, all TRUST_IMAGES are measured. progress
    (stage, done, total) hears of the pictures measured as "region trust". None when no picture
    gave two boxes (an empty or tiny library: nothing to measure)."""
    started = time.perf_counter()
    order = sample_order(n_images)
    looks = list(range(TRUST_FIRST, len(order), TRUST_STEP)) if ramp is not None else []
    report = progress if progress is not None and len(order) else lambda stage, done, total: None
    report("region trust", 0, len(order))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    found = None
    for begin, end in zip([0, *looks], [*looks, len(order)], strict=True):
        rows, alone, picture_of = sampled_boxes_alone(picture, order[begin:end], boxes, region_start)
        if len(rows):
            phrases = trust_phrases(encoder) if phrases is None else phrases
            region = phrase_space(np.asarray(region_vectors[rows], dtype=np.float32), phrases)
            parts.append((region, phrase_space(whole_vectors(encoder, alone), phrases), picture_of))
        if parts:
            region, crops, picture_of = (np.concatenate(side) for side in zip(*parts, strict=True))
            found = (*trust_estimate(region, crops, picture_of), len(region), len(set(picture_of)))
            if ramp is not None and settled(found[0], found[2], ramp):
                break
        report("region trust", end, len(order))
    report("region trust", end, end)  # a sample stopped early is complete at its size
    if found is None:
        return None
    trust, mrr, spread, regions, images = found
    spread = spread if np.isfinite(spread) else None  # one picture: no spread to tell (nor JSON's to write)
    return RegionTrust(trust, mrr, regions, images, time.perf_counter() - started, spread=spread)


def sample_order(n_images: int, count: int = TRUST_IMAGES) -> np.ndarray:
    """sample_images(n_images, count) in the order they are measured: every prefix spread evenly
    over the library (positions in bit-reversed order), so that a sample stopped early is still
    an even one."""
    sample = sample_images(n_images, count)
    if len(sample) < 2:
        return sample
    bits = int(np.ceil(np.log2(len(sample))))
    reversed_bits = [int(format(k, f"0{bits}b")[::-1], 2) for k in range(len(sample))]
    return sample[np.argsort(reversed_bits, kind="stable")]


def sampled_boxes_alone(
    picture: Callable[[int], Picture | None],
    images: np.ndarray,
    boxes: np.ndarray,
    region_start: np.ndarray,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """The sample measure_trust measures on: region rows [N], each row's box shown alone (PIL),
    and the image each came from [N]; on each of `images` (rows of the index), sample_boxes of
    its regions among the rows `keep` [R] marks (all without it); an image is left out when it
    gives fewer than two boxes or cannot be read."""
    rows: list[int] = []
    alone: list[Any] = []
    picture_of: list[int] = []
    for i in images:
        own = np.arange(int(region_start[i]), int(region_start[i + 1]))
        if keep is not None:
            own = own[keep[own]]
        read = picture(int(i)) if len(own) >= 2 else None
        if read is None:
            continue
        chosen = own[sample_boxes(boxes[own], read[1], read[2], SEED + int(i))]
        if len(chosen) < 2:
            continue
        for row in chosen:
            alone.append(shown_alone(read, boxes[row]))
            rows.append(int(row))
            picture_of.append(int(i))
    return np.asarray(rows, dtype=np.int64), alone, np.asarray(picture_of, dtype=np.int64)


def shown_alone(read: Picture, box: np.ndarray) -> Any:
    """`box` (pixels of the full image) of a read picture (image, full width, full height) shown
    alone: box_alone of the square around it."""
    from harmosearch.search.crops import crop_square

    image, width, height = read
    return box_alone(image, crop_square(box, image.width / width, image.height / height, 0.0))


def trust_phrases(encoder: Any) -> np.ndarray:
    """The phrases trust sees vectors through [K, D]: the everyday vocabulary as `encoder` embeds a
    query's lexemes, kept under paths.cache as the queries' rivals are (once per model and
    settings of its identity)."""
    from harmosearch.errors import DataError
    from harmosearch.search.contrast import load_vocabulary

    vocabulary = load_vocabulary(encoder, "everyday", getattr(encoder, "cache_dir", None))
    if vocabulary is None:
        raise DataError("the installed everyday vocabulary is empty; reinstall harmosearch")
    return vocabulary.vectors


def whole_vectors(encoder: Any, pictures: list[Any]) -> np.ndarray:
    """Global vectors [N, D] of PIL pictures, encoded as the indexing pipeline encodes (the
    transform's geometry per picture, then ToTensor and Normalize for a whole batch at once:
    much faster than the transform per picture), in batches of the encoder's batch size."""
    import torch

    from harmosearch.model.encoder import pixels_from_uint8, split_transform

    split = split_transform(encoder.transform)
    batch = encoder.config.batch_size
    out = []
    for start in range(0, len(pictures), batch):
        part = pictures[start : start + batch]
        if split is None:
            out.append(encoder.encode_images(part)[0].numpy())
            continue
        arrays = np.stack([np.asarray(split[0](p.convert("RGB")), dtype=np.uint8) for p in part])
        out.append(encoder.encode_pixels(pixels_from_uint8(torch.from_numpy(arrays), *split[1]))[0].numpy())
    return np.concatenate(out).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
