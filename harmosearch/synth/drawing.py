"""A scene drawn: textured background, shapes drawn supersampled, and each object's pixel mask."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from harmosearch.errors import DataError
from harmosearch.synth.scenes import Scene

SUPERSAMPLE = 2


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        s = r * 0.88
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=255)
    elif shape == "star":
        draw.polygon(_star(cx, cy + r * 0.08, r), fill=255)
    elif shape == "cross":
        t = r * 0.34
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=255)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=255)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        inner = r * 0.55
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
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
        _draw_shape(ImageDraw.Draw(mask), obj.shape, obj.cx * SUPERSAMPLE, obj.cy * SUPERSAMPLE, obj.half * SUPERSAMPLE)
        canvas.paste(Image.new("RGB", (side, side), obj.rgb), (0, 0), mask)
        small = mask.resize((scene.size, scene.size), Image.BOX)
        masks.append(np.asarray(small) > 0)
    image = canvas.resize((scene.size, scene.size), Image.LANCZOS)
    return image, masks
