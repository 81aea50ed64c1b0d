"""The photo world's backgrounds: square cuts of the photographs that ship inside scikit-image
(read from its own files, never downloaded), scaled, flipped and colour-jittered, grey ones
tinted into RGB.

The photographs are split so that a model trained on some of them is measured on others:
scenes of `photos` "test" are cut only from PHOTO_SPLITS["test"], which no train or val scene
uses, and val scenes only from PHOTO_SPLITS["val"]. Each split mixes colour and grey
photographs, natural scenes and textures. scikit-image's synthetic images (logo, colorwheel,
horse, binary_blobs, shepp_logan_phantom) and lfw_subset are left out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from harmosearch.errors import ConfigError

PHOTO_SPLITS: dict[str, tuple[str, ...]] = {
    # colour: astronaut, coffee, chelsea, retina; grey: the rest
    "train": ("astronaut", "coffee", "chelsea", "retina", "brick", "grass", "camera", "coins", "moon", "page"),
    # colour: rocket, immunohistochemistry; grey: clock, cell
    "val": ("rocket", "immunohistochemistry", "clock", "cell"),
    # colour: stereo_motorcycle (its left view), hubble_deep_field; grey: text, gravel
    "test": ("stereo_motorcycle", "hubble_deep_field", "text", "gravel"),
}
GREY_PHOTOS = frozenset({"brick", "grass", "camera", "coins", "moon", "page", "clock", "cell", "text", "gravel"})
# The side of a cut, as a share of the photograph's short side: from a close-up to all of it.
CUT_SHARE = (0.35, 1.0)


@dataclass(frozen=True)
class Backdrop:
    photo: str  # a name in PHOTO_SPLITS
    cut: tuple[float, float, float]  # side (share of the short side), left and top (shares of the room left)
    flip: tuple[bool, bool]  # left-right, top-bottom
    gains: tuple[float, float, float]  # per channel: a grey photograph's tint, a colour one's white balance
    contrast: float
    saturation: float


def photo_names(split: str) -> tuple[str, ...]:
    if split not in PHOTO_SPLITS:
        raise ConfigError(f"unknown photo split {split!r}; choose from {', '.join(PHOTO_SPLITS)}")
    return PHOTO_SPLITS[split]


# Each photograph's file in scikit-image's data folder, where its name does not give it.
_FILES = {
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "clock": "clock_motion.png",
    "stereo_motorcycle": "motorcycle_left.png",  # its left view
}


@functools.cache
def photograph(name: str) -> np.ndarray:
    """The photograph as uint8, H x W (grey) or H x W x 3 (colour), read with Pillow from
    scikit-image's own files: the pixels `skimage.data` gives, without its reader (imageio),
    which registers every Pillow plugin it finds (HEIF's among them) in the host process."""
    from importlib.resources import files

    if not any(name in names for names in PHOTO_SPLITS.values()):
        raise ConfigError(f"{name!r} is not one of the photo world's photographs")
    path = files("skimage") / "data" / _FILES.get(name, f"{name}.png")
    try:
        with Image.open(str(path)) as image:
            return np.ascontiguousarray(np.asarray(image), dtype=np.uint8)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the photo world's photograph {name!r} ({exc}); reinstall scikit-image"
        ) from None


def sample_backdrop(rng: np.random.Generator, split: str) -> Backdrop:
    """A random cut of one of the split's photographs, with its flips and colour jitter."""
    photo = str(rng.choice(photo_names(split)))
    cut = (float(rng.uniform(*CUT_SHARE)), float(rng.random()), float(rng.random()))
    flip = (bool(rng.random() < 0.5), bool(rng.random() < 0.2))
    spread = 0.18 if photo in GREY_PHOTOS else 0.07  # grey: a visible tint; colour: a white balance shift
    gains = tuple(float(g) for g in 1 + rng.uniform(-spread, spread, size=3))
    return Backdrop(photo, cut, flip, gains, float(rng.uniform(0.7, 1.3)), float(rng.uniform(0.6, 1.4)))  # type: ignore[arg-type]


def backdrop_pixels(backdrop: Backdrop, side: int) -> np.ndarray:
    """The backdrop as float32 RGB, side x side x 3, in [0, 255]."""
    image = photograph(backdrop.photo)
    h, w = image.shape[:2]
    share, left, top = backdrop.cut
    cut = max(8, round(min(h, w) * share))
    x0, y0 = round((w - cut) * left), round((h - cut) * top)
    part = image[y0 : y0 + cut, x0 : x0 + cut]
    if part.ndim == 2:
        part = np.repeat(part[..., None], 3, axis=2)
    pixels = np.asarray(Image.fromarray(part).resize((side, side), Image.BICUBIC), dtype=np.float32)
    if backdrop.flip[0]:
        pixels = pixels[:, ::-1]
    if backdrop.flip[1]:
        pixels = pixels[::-1]
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = grey + (pixels - grey) * backdrop.saturation
    mean = float(pixels.mean())
    pixels = mean + (pixels - mean) * backdrop.contrast
    pixels = pixels * np.asarray(backdrop.gains, dtype=np.float32)
    return np.ascontiguousarray(np.clip(pixels, 0, 255), dtype=np.float32)
