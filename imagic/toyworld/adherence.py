"""Caption adherence: does a generated toy-world image show what its caption says?

A procedural check, no learned judge: every pixel is given the nearest colour of the toy
world's palette, and each captioned object must appear as a blob of its colour, near its
position's anchor and shaped like its shape. Toy-world colours are saturated and far apart
(every object colour is at least 97 RGB units from any other palette colour), so nearest-colour
classification is reliable even on slightly off generated pixels.

    result = check_sample(generated_image, scene)   # scene: what the caption said
    result.ok, result.reason
    adherence_rate(results)                         # {"ok": 0.8, "colour": 0.9, ...}

Size, pose and background are not checked. The check assumes fairly crisp samples, like the
training renders: blur erases thin stick-figure lines and a small face's eyes, and rounds a
small square's or star's corners until a circle fits better (ground-truth renders blurred with
a Gaussian of radius 1 pass about 70% of the time, unblurred ones always).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

from imagic.toyworld import drawing
from imagic.toyworld.scenes import Scene, SceneObject, masks
from imagic.toyworld.vocabulary import (
    BACKGROUND_COLOURS,
    FEATURE_COLOUR,
    OBJECT_COLOURS,
    POSES,
    POSITIONS,
    SHAPES,
)

__all__ = ["MIN_AREA_SHARE", "MIN_SHAPE_IOU", "AdherenceResult", "adherence_rate", "check_sample"]

# An object is found when its blob covers this share of the captioned object's mask: low enough
# for a sample drawn a little small or with ragged edges, far above what noise produces.
MIN_AREA_SHARE = 0.3
# The captioned shape must match best and at least this well, so an amorphous blob never passes.
MIN_SHAPE_IOU = 0.5

# The full palette, not just the scene's colours: pink is close to red, brown to orange and navy
# to blue, so a pinkish pixel must be called pink, not red. Backgrounds, their stripes and dots,
# and the face features are all "not an object colour".
_PALETTE_NAMES: tuple[str, ...] = (
    *OBJECT_COLOURS,
    *(f"background {name}" for name in BACKGROUND_COLOURS),
    *(f"texture {name}" for name in BACKGROUND_COLOURS),
    "feature",
)
_PALETTE = np.array(
    [
        *OBJECT_COLOURS.values(),
        *BACKGROUND_COLOURS.values(),
        *(drawing.texture_colour(name) for name in BACKGROUND_COLOURS),
        FEATURE_COLOUR,
    ],
    dtype=np.int32,
)
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


@dataclass(frozen=True)
class AdherenceResult:
    """Per-check verdicts for one sample; each is True only if it holds for every object."""

    colour: bool
    shape: bool
    position: bool
    reason: str = ""  # the failures, "; "-separated; empty when ok

    @property
    def ok(self) -> bool:
        """The sample shows what the caption says (colour, shape and position of every object)."""
        return self.colour and self.shape and self.position


def check_sample(image: np.ndarray | Image.Image, scene: Scene) -> AdherenceResult:
    """Judge a generated image against the scene its caption describes.

    For each object, its blob is the largest 8-connected region of its colour (8-connected so
    thin stick-figure lines hold together). When two objects share a colour, each one only
    looks at the pixels nearer its own captioned anchor than the other's (a Voronoi split), so
    one object cannot be found in the other's place. Then:

    - colour: the blob covers at least MIN_AREA_SHARE of the object's ground-truth mask area;
    - position: the blob's centroid is nearer the captioned anchor than any other position's;
    - shape: drawn with the project's own drawers at the blob's centroid and at several sizes,
      the captioned shape (any pose) overlaps the blob best of all six shapes (IoU), and at
      least MIN_SHAPE_IOU. The colour pixels of a face exclude its eyes and mouth, so a face
      and a circle are told apart by those holes, and a stick figure by its thin lines.

    An object not found (colour failed) also fails position and shape: they are judged on the
    blob of the captioned colour, and there is none to judge.
    """
    pixels = _as_array(image)
    size = pixels.shape[0]
    labels = _classify(pixels)
    expected = masks(scene, size)
    verdicts = {"colour": True, "shape": True, "position": True}
    reasons = []
    for index, obj in enumerate(scene.objects):
        name = f"object {index} ({obj.colour} {obj.shape}, {obj.position})"
        blob = _blob(labels, scene, index, size)
        found, area = int(blob.sum()), int(expected[index].sum())
        if found < MIN_AREA_SHARE * area:
            verdicts.update(colour=False, shape=False, position=False)
            reasons.append(
                f"{name}: {found} {obj.colour} pixels, expected at least "
                f"{MIN_AREA_SHARE * area:.0f} ({MIN_AREA_SHARE:.0%} of {area})"
            )
            continue
        ys, xs = np.nonzero(blob)
        centre = (float(xs.mean()), float(ys.mean()))
        nearest = _nearest_position(centre, size)
        if nearest != obj.position:
            verdicts["position"] = False
            reasons.append(
                f"{name}: centroid at ({centre[0]:.0f}, {centre[1]:.0f}) is nearest {nearest!r}"
            )
        scores = {shape: _shape_iou(blob, centre, shape) for shape in SHAPES}
        best = max(scores, key=scores.__getitem__)
        if scores[obj.shape] < scores[best] or scores[obj.shape] < MIN_SHAPE_IOU:
            verdicts["shape"] = False
            reasons.append(
                f"{name}: looks most like a {best} (IoU {scores[best]:.2f}, "
                f"{obj.shape} {scores[obj.shape]:.2f})"
            )
    return AdherenceResult(**verdicts, reason="; ".join(reasons))


def adherence_rate(results: Sequence[AdherenceResult]) -> dict[str, float]:
    """Share of samples that pass all checks ("ok") and each check alone."""
    if not results:
        raise ValueError("adherence_rate needs at least one AdherenceResult")
    count = len(results)
    return {
        key: sum(bool(getattr(result, key)) for result in results) / count
        for key in ("ok", "colour", "shape", "position")
    }


def _as_array(image: np.ndarray | Image.Image) -> np.ndarray:
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] != pixels.shape[1]:
        raise ValueError(f"image must be square RGB (H, W, 3), not shape {pixels.shape}")
    drawing.check_image_size(int(pixels.shape[0]))
    return pixels


def _classify(pixels: np.ndarray) -> np.ndarray:
    """(H, W) index into the palette of each pixel's nearest colour (Euclidean RGB)."""
    diff = pixels.astype(np.int32)[:, :, None, :] - _PALETTE[None, None]
    return np.argmin((diff * diff).sum(axis=-1), axis=-1)


def _blob(labels: np.ndarray, scene: Scene, index: int, size: int) -> np.ndarray:
    """The largest 8-connected region of the object's colour, within its Voronoi cell."""
    obj = scene.objects[index]
    candidates = labels == _PALETTE_NAMES.index(obj.colour)
    yy, xx = np.mgrid[0:size, 0:size]
    own = _squared_distance(xx, yy, obj, size)
    for other_index, other in enumerate(scene.objects):
        if other_index != index and other.colour == obj.colour:
            candidates &= own <= _squared_distance(xx, yy, other, size)
    return _largest_component(candidates)


def _squared_distance(xx: np.ndarray, yy: np.ndarray, obj: SceneObject, size: int) -> np.ndarray:
    x, y = drawing.anchor(obj.position, size)
    return (xx - x) ** 2 + (yy - y) ** 2


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (breadth-first; images are tiny)."""
    height, width = mask.shape
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        component, queue = [], deque([start])
        while queue:
            y, x = queue.popleft()
            component.append((y, x))
            for dy, dx in _NEIGHBOURS:
                ny, nx = y + dy, x + dx
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(component) > len(best):
            best = component
    result = np.zeros_like(mask)
    if best:
        result[tuple(np.array(best).T)] = True
    return result


def _nearest_position(centre: tuple[float, float], size: int) -> str:
    def distance(position: str) -> float:
        x, y = drawing.anchor(position, size)
        return (centre[0] - x) ** 2 + (centre[1] - y) ** 2

    return min(POSITIONS, key=distance)


@cache
def _template(shape: str, pose: str | None, h: int, size: int) -> tuple[np.ndarray, float, float]:
    """(mask, centroid x, centroid y): the shape's object-coloured pixels drawn at the middle.

    Drawn by the project's own drawers (`drawing.DRAWERS`) at any half-extent h, not only the
    two sizes, so a sample drawn a little larger or smaller still matches its shape.
    """
    canvases = [Image.new("L", (size, size), 0) for _ in range(2)]
    pen = drawing._Pen(*map(ImageDraw.Draw, canvases), size // 2, size // 2, h, pose)
    drawing.DRAWERS[shape](pen)
    silhouette, features = (np.asarray(canvas) > 0 for canvas in canvases)
    mask = silhouette & ~features
    ys, xs = np.nonzero(mask)
    return mask, float(xs.mean()), float(ys.mean())


def _shape_iou(blob: np.ndarray, centre: tuple[float, float], shape: str) -> float:
    """Best IoU of the shape's templates (poses, sizes near the blob's, centroids aligned ±1)."""
    size = blob.shape[0]
    ys, xs = np.nonzero(blob)
    extent = max(xs.max() - xs.min(), ys.max() - ys.min()) // 2
    best = 0.0
    for pose in POSES.get(shape, (None,)):
        for h in range(max(2, extent - 2), extent + 3):
            mask, tx, ty = _template(shape, pose, h, size)
            dx0, dy0 = round(centre[0] - tx), round(centre[1] - ty)
            for dy in (dy0 - 1, dy0, dy0 + 1):
                for dx in (dx0 - 1, dx0, dx0 + 1):
                    moved = _shift(mask, dx, dy)
                    union = np.count_nonzero(moved | blob)
                    best = max(best, np.count_nonzero(moved & blob) / union)
    return best


def _shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The mask moved by (dx, dy), zero-filled (no wrap-around, unlike np.roll)."""
    height, width = mask.shape
    moved = np.zeros_like(mask)
    src = mask[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
    moved[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return moved
