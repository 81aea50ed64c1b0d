"""What the scenes say in words: relations between objects and captions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harmosearch.synth.scenes import Scene, SceneObject

if TYPE_CHECKING:
    from harmosearch.synth.photo_scenes import PhotoScene


def relation(a: SceneObject, b: SceneObject) -> str:
    """Where a stands relative to b, in the image's own frame."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


INVERSE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def article(words: str) -> str:
    """ "red circle" -> "a red circle"; "orange star" -> "an orange star"."""
    return ("an " if words[0] in "aeiou" else "a ") + words


def _listing(names: list[str]) -> str:
    named = [article(n) for n in names]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


def _position(obj: SceneObject, size: int) -> str:
    row = "top" if obj.cy < size / 3 else "bottom" if obj.cy > 2 * size / 3 else "middle"
    col = "left" if obj.cx < size / 3 else "right" if obj.cx > 2 * size / 3 else "centre"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}".replace("middle ", "")


def captions(scene: Scene | PhotoScene, rng: np.random.Generator, count: int = 5) -> list[str]:
    """`count` different captions; relations and sizes make attribute binding matter."""
    objs = list(scene.objects)
    bg = scene.background_word

    def name(o: SceneObject) -> str:
        return f"{o.size} {o.phrase}" if rng.random() < 0.4 else o.phrase

    candidates: list[str] = []
    if len(objs) == 1:
        o = objs[0]
        candidates += [
            article(o.phrase),
            f"{article(o.size + ' ' + o.phrase)} on {article(bg)} background",
            f"a photo of {article(o.phrase)}",
            f"{article(o.phrase)} in the {_position(o, scene.size)} of the picture",
            f"one {o.size} {o.phrase} on {article(bg)} background",
            f"{article(bg)} background with {article(o.phrase)}",
            f"a single {o.phrase}",
        ]
    else:
        order = [int(i) for i in rng.permutation(len(objs))]
        pairs = [(objs[order[i]], objs[order[(i + 1) % len(objs)]]) for i in range(len(objs))]
        a, b = pairs[0]
        rel = relation(a, b)
        candidates += [
            f"{article(name(a))} {rel} {article(name(b))} on {article(bg)} background",
            f"{article(name(b))} {INVERSE[rel]} {article(name(a))}",
            _listing([name(objs[i]) for i in order]),
            f"{NUMBERS[len(objs)]} shapes: {_listing([o.phrase for o in objs])}",
            f"{article(name(a))} next to {article(name(b))}",
            f"a photo of {_listing([o.phrase for o in objs])} on {article(bg)} background",
        ]
        for x, y in pairs[1:]:
            candidates.append(f"{article(name(x))} {relation(x, y)} {article(name(y))}")
        candidates.append(f"{article(bg)} background with {_listing([o.phrase for o in objs])}")
    unique = list(dict.fromkeys(candidates))
    return unique[:count]
