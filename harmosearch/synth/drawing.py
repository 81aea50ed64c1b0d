"""A scene drawn: textured background, shapes drawn supersampled, and each object's pixel mask."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from harmosearch.errors import DataError
from harmosearch.synth.scenes import Scene

SUPERSAMPLE = 2


def _star(cx: float, cy: float, rx: float, ry: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        share = 1 if k % 2 == 0 else 0.45
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + rx * share * math.cos(angle), cy + ry * share * math.sin(angle)))
    return points


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, rx: float, ry: float) -> None:
    """Fill a shape whose box has half-sides rx (across) and ry (down); rx == ry draws it unstretched."""
    if shape == "circle":
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif shape == "square":
        sx, sy = rx * 0.88, ry * 0.88
        draw.rectangle([cx - sx, cy - sy, cx + sx, cy + sy], fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - ry), (cx + rx, cy + ry * 0.8), (cx - rx, cy + ry * 0.8)], fill=255)
    elif shape == "star":
        draw.polygon(_star(cx, cy + ry * 0.08, rx, ry), fill=255)
    elif shape == "cross":
        tx, ty = rx * 0.34, ry * 0.34
        draw.rectangle([cx - rx, cy - ty, cx + rx, cy + ty], fill=255)
        draw.rectangle([cx - tx, cy - ry, cx + tx, cy + ry], fill=255)
    elif shape == "ring":
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        ix, iy = rx * 0.55, ry * 0.55
        draw.ellipse([cx - ix, cy - iy, cx + ix, cy + iy], fill=0)
    else:
        raise DataError(f"unknown shape {shape!r}")


def _background(scene: Scene, side: int) -> np.ndarray:
    a = np.array(scene.tones[0], dtype=np.float32)
    b = np.array(scene.tones[1], dtype=np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rng = np.random.default_rng(scene.noise_seed)
    kind = scene.background
    if kind == "solid":
        weight = np.zeros_like(xx)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        weight = xx * math.cos(angle) + yy * math.sin(angle)
        weight = (weight - weight.min()) / max(float(np.ptp(weight)), 1e-6)
    elif kind == "noise":
        coarse = rng.random((side // 16 + 1, side // 16 + 1)).astype(np.float32)
        weight = (
            np.asarray(
                Image.fromarray((coarse * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR),
                dtype=np.float32,
            )
            / 255
        )
        weight = weight * 0.8 + rng.random((side, side)).astype(np.float32) * 0.2
    elif kind == "stripes":
        period = rng.uniform(0.06, 0.14)
        angle = rng.choice([0.0, math.pi / 2, math.pi / 4, -math.pi / 4])
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        weight = (np.floor(phase) % 2).astype(np.float32)
    elif kind == "checker":
        period = rng.uniform(0.08, 0.16)
        weight = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    elif kind == "dots":
        period = rng.uniform(0.07, 0.12)
        fx = (xx / period) % 1 - 0.5
        fy = (yy / period) % 1 - 0.5
        weight = ((fx**2 + fy**2) < 0.09).astype(np.float32)
    else:
        raise DataError(f"unknown background {kind!r}")
    pixels = a * (1 - weight[..., None]) + b * weight[..., None]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def render(scene: Scene) -> tuple[Image.Image, list[np.ndarray]]:
    """The RGB image and, per object, a boolean mask of its pixels (output resolution)."""
    side = scene.size * SUPERSAMPLE
    canvas = Image.fromarray(_background(scene, side))
    masks = []
    for obj in scene.objects:
        mask = Image.new("L", (side, side), 0)
        r = obj.half * SUPERSAMPLE
        draw_shape(ImageDraw.Draw(mask), obj.shape, obj.cx * SUPERSAMPLE, obj.cy * SUPERSAMPLE, r, r)
        canvas.paste(Image.new("RGB", (side, side), obj.rgb), (0, 0), mask)
        small = mask.resize((scene.size, scene.size), Image.BOX)
        masks.append(np.asarray(small) > 0)
    image = canvas.resize((scene.size, scene.size), Image.LANCZOS)
    return image, masks
