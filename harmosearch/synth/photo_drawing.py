"""A photo-world scene drawn: the backdrop, clutter behind, the objects in order (stretched,
shaded, grained; later ones hide earlier ones), thin clutter lines in front, then the finish
(brightness, blur, noise; JPEG is the writer's). Also what of each object shows."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from harmosearch.synth.drawing import SUPERSAMPLE, draw_shape
from harmosearch.synth.photo import backdrop_pixels
from harmosearch.synth.photo_scenes import Clutter, Finish, PhotoObject, PhotoScene


def object_mask(obj: PhotoObject, side: int) -> np.ndarray:
    """The object's pixels on a side x side canvas (side: the output side times SUPERSAMPLE)."""
    mask = Image.new("L", (side, side), 0)
    k = SUPERSAMPLE
    draw_shape(ImageDraw.Draw(mask), obj.shape, obj.cx * k, obj.cy * k, obj.half * k, obj.half_y * k)
    return np.asarray(mask) > 0


def clutter_mask(item: Clutter, side: int) -> np.ndarray:
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    points = [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in item.points]
    if item.kind == "line":
        draw.line(points, fill=255, width=item.width * SUPERSAMPLE, joint="curve")
    else:
        draw.polygon(points, fill=255)
    return np.asarray(mask) > 0


def _object_pixels(obj: PhotoObject, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The colours of the object's pixels: a light gradient across it, and fine grain."""
    ys, xs = np.nonzero(mask)
    k = SUPERSAMPLE
    along = (xs / k - obj.cx) * math.cos(obj.shade_angle) + (ys / k - obj.cy) * math.sin(obj.shade_angle)
    t = (along / max(obj.half, obj.half_y)).astype(np.float32)[:, None]
    rgb = np.asarray(obj.rgb, dtype=np.float32)
    shaded = rgb * (1 + obj.shade * t) + 25 * obj.shade * t  # the additive part: black shows the light too
    grain = rng.normal(0, obj.grain, size=(len(xs), 1)).astype(np.float32)
    return np.clip(shaded + grain, 0, 255)


def _finished(image: Image.Image, finish: Finish, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) * finish.brightness
    if finish.blur > 0:
        sharp = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        pixels = np.asarray(sharp.filter(ImageFilter.GaussianBlur(finish.blur)), dtype=np.float32)
    if finish.noise > 0:
        pixels = pixels + rng.normal(0, finish.noise, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _shrunk(mask: np.ndarray, size: int) -> np.ndarray:
    """A supersampled mask at the output side: a pixel counts if any of its subpixels does."""
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BOX)) > 0


def render_photo(scene: PhotoScene) -> tuple[Image.Image, list[np.ndarray], list[float]]:
    """The RGB image (before JPEG) and, per object, a boolean mask of its visible pixels (output
    resolution) and the share of its pixels that shows (supersampled)."""
    side = scene.size * SUPERSAMPLE
    rng = np.random.default_rng(scene.noise_seed)
    canvas = backdrop_pixels(scene.backdrop, side)
    for item in scene.clutter:
        if not item.front:
            canvas[clutter_mask(item, side)] = item.rgb
    shapes = []
    for obj in scene.objects:
        mask = object_mask(obj, side)
        canvas[mask] = _object_pixels(obj, mask, rng)
        shapes.append(mask)
    cover = np.zeros((side, side), dtype=bool)
    for item in scene.clutter:
        if item.front:
            mask = clutter_mask(item, side)
            canvas[mask] = item.rgb
            cover |= mask
    visible: list[np.ndarray] = []
    shares: list[float] = []
    for mask in reversed(shapes):  # what shows of an object: its pixels that nothing drawn later covers
        shows = mask & ~cover
        visible.insert(0, _shrunk(shows, scene.size))
        shares.insert(0, float(shows.sum()) / max(int(mask.sum()), 1))
        cover |= mask
    image = Image.fromarray(np.rint(canvas).astype(np.uint8)).resize((scene.size, scene.size), Image.LANCZOS)
    return _finished(image, scene.finish, rng), visible, shares
