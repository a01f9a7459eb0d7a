"""Pixel geometry of the toy world: where each position is, how big each size is, how shapes look.

Everything is drawn with Pillow's non-antialiased primitives on integer coordinates, so a scene
renders to the same bytes on every machine and an object's mask is exactly the set of pixels it
painted: no blended edge pixels belong half to an object and half to the background.

The layout guarantees that objects never touch: the five positions are fixed anchors and the
large size is the biggest half-extent for which the boxes of any two anchors stay at least one
pixel apart (`half_extent`). This module works on plain attribute values, not on `Scene`, so
`scenes` can import it without a cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from imagic.toyworld.vocabulary import (
    BACKGROUND_COLOURS,
    POSITIONS,
    RGB,
    SIZES,
    TEXTURE_SHIFT,
    TEXTURES,
)

MIN_IMAGE_SIZE = 32
SMALL_TO_LARGE = 0.55  # small objects' half-extent relative to large ones (about 1/3 the area)

Point = tuple[int, int]
Box = tuple[int, int, int, int]


def check_image_size(image_size: int) -> None:
    """Below 32 pixels a small stick figure is a few pixels and poses stop being visible."""
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"size {image_size!r} is too small: the toy world needs square images of at least "
            f"{MIN_IMAGE_SIZE} pixels; use size=64 (the default) or larger"
        )


def _round(value: float) -> int:
    """Round half up: Python's round() rounds halves to even, which makes shapes lopsided."""
    return math.floor(value + 0.5)


def half_extent(size: str, image_size: int) -> int:
    """Half the side of the square box an object of this size fits in, in pixels.

    With anchors at `margin = large + 1` from the borders and in the middle, two anchors are
    at least `image_size // 2 - margin - 1` apart on some axis; boxes of half-extent h leave a
    one-pixel gap when that distance is at least 2h + 2, which solves to the formula below.
    At 64 pixels a large object is 19 pixels across and a small one 11.
    """
    if size not in SIZES:
        raise ValueError(f"size {size!r} is not one of {', '.join(SIZES)}")
    large = (image_size // 2 - 4) // 3
    return large if size == "large" else max(2, _round(large * SMALL_TO_LARGE))


def anchor(position: str, image_size: int) -> Point:
    """The pixel an object at `position` is centred on."""
    margin = half_extent("large", image_size) + 1
    low, middle, high = margin, image_size // 2, image_size - 1 - margin
    anchors = {
        "left": (low, middle),
        "right": (high, middle),
        "top": (middle, low),
        "bottom": (middle, high),
        "centre": (middle, middle),
    }
    if position not in anchors:
        raise ValueError(f"position {position!r} is not one of {', '.join(POSITIONS)}")
    return anchors[position]


def bounding_box(position: str, size: str, image_size: int) -> Box:
    """(x0, y0, x1, y1), inclusive: every pixel an object of this size and position may paint."""
    x, y = anchor(position, image_size)
    h = half_extent(size, image_size)
    return (x - h, y - h, x + h, y + h)


# ---------------------------------------------------------------------------------------------
# Backgrounds


def texture_colour(background: str) -> RGB:
    """The stripes' and dots' colour: the background shifted towards mid-grey, subtly."""
    rgb = BACKGROUND_COLOURS[background]
    shift = TEXTURE_SHIFT if sum(rgb) < 3 * 128 else -TEXTURE_SHIFT
    return tuple(min(255, max(0, channel + shift)) for channel in rgb)  # type: ignore[return-value]


def texture_pattern(texture: str, image_size: int) -> np.ndarray:
    """Boolean (H, W) array: True where the texture colour replaces the background colour.

    Stripes are diagonal and dots a square lattice, one period every eighth of the image, each
    mark a quarter of the period wide, so the texture covers little of the background.
    """
    if texture not in TEXTURES:
        raise ValueError(f"texture {texture!r} is not one of {', '.join(TEXTURES)}")
    period = max(4, image_size // 8)
    mark = max(1, period // 4)
    y, x = np.mgrid[0:image_size, 0:image_size]
    if texture == "striped":
        return (x + y) % period < mark
    if texture == "dotted":
        offset = (period - mark) // 2
        return ((x - offset) % period < mark) & ((y - offset) % period < mark)
    return np.zeros((image_size, image_size), dtype=bool)


def background_array(background: str, texture: str, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 array of the textured background, without objects."""
    if background not in BACKGROUND_COLOURS:
        raise ValueError(f"background {background!r} is not one of {', '.join(BACKGROUND_COLOURS)}")
    pixels = np.empty((image_size, image_size, 3), dtype=np.uint8)
    pixels[:] = BACKGROUND_COLOURS[background]
    pixels[texture_pattern(texture, image_size)] = texture_colour(background)
    return pixels


# ---------------------------------------------------------------------------------------------
# Objects: each drawer paints the silhouette (the object's colour) and, for faces, the features
# (eyes and mouth, in FEATURE_COLOUR) on two single-channel canvases.

ON = 255


@dataclass(frozen=True)
class _Pen:
    """Where one object is drawn: its two canvases, its centre (x, y), half-extent h and pose."""

    silhouette: ImageDraw.ImageDraw
    features: ImageDraw.ImageDraw
    x: int
    y: int
    h: int
    pose: str | None


Drawer = Callable[[_Pen], None]


def _circle(pen: _Pen) -> None:
    x, y, h = pen.x, pen.y, pen.h
    pen.silhouette.ellipse((x - h, y - h, x + h, y + h), fill=ON)


def _square(pen: _Pen) -> None:
    # A little smaller than the box, so a square does not look much bigger than a circle.
    x, y, s = pen.x, pen.y, _round(pen.h * 0.85)
    pen.silhouette.rectangle((x - s, y - s, x + s, y + s), fill=ON)


def _triangle(pen: _Pen) -> None:
    x, y, h = pen.x, pen.y, pen.h
    pen.silhouette.polygon([(x, y - h), (x + h, y + h), (x - h, y + h)], fill=ON)


def _star(pen: _Pen) -> None:
    points = []
    for k in range(10):  # five outer tips, the first pointing up, and five inner corners
        radius = pen.h if k % 2 == 0 else 0.45 * pen.h
        angle = -math.pi / 2 + k * math.pi / 5
        points.append(
            (pen.x + _round(radius * math.cos(angle)), pen.y + _round(radius * math.sin(angle)))
        )
    pen.silhouette.polygon(points, fill=ON)


def _stick_figure(pen: _Pen) -> None:
    """A head, a body, two legs and two arms raised or lowered: the pose edit moves only arms."""
    x, y, h, draw = pen.x, pen.y, pen.h, pen.silhouette
    width = max(1, _round(h / 4))
    inset = width // 2  # keeps thick lines inside the object's box
    r = max(1, _round(h * 0.25))
    draw.ellipse((x - r, y - h, x + r, y - h + 2 * r), fill=ON)
    neck = y - h + 2 * r + 1
    hip = y + _round(h * 0.25)
    draw.line([(x, neck), (x, hip)], fill=ON, width=width)
    reach = _round(h * 0.7) - inset
    foot = y + h - inset
    draw.line([(x - reach, foot), (x, hip), (x + reach, foot)], fill=ON, width=width)
    shoulder = neck + _round(h * 0.15)
    hand = shoulder + (-1 if pen.pose == "arms up" else 1) * max(1, _round(h * 0.55))
    hand_reach = _round(h * 0.8) - inset
    draw.line([(x - hand_reach, hand), (x, shoulder), (x + hand_reach, hand)], fill=ON, width=width)


def _face(pen: _Pen) -> None:
    """A disc with two eyes and a mouth bent up (smiling) or down (frowning)."""
    x, y, h = pen.x, pen.y, pen.h
    pen.silhouette.ellipse((x - h, y - h, x + h, y + h), fill=ON)
    eye_r = max(1, _round(h * 0.12))
    eye_dx, eye_y = _round(h * 0.4), y - _round(h * 0.3)
    for eye_x in (x - eye_dx, x + eye_dx):
        pen.features.ellipse((eye_x - eye_r, eye_y - eye_r, eye_x + eye_r, eye_y + eye_r), fill=ON)
    half = _round(h * 0.5)
    high, low = y + _round(h * 0.15), y + _round(h * 0.5)
    ends, middle = (high, low) if pen.pose == "smiling" else (low, high)
    width = max(1, _round(h / 6))
    pen.features.line([(x - half, ends), (x, middle), (x + half, ends)], fill=ON, width=width)


DRAWERS: dict[str, Drawer] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "stick figure": _stick_figure,
    "face": _face,
}


def draw_object(
    shape: str, pose: str | None, size: str, position: str, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(silhouette, features): boolean (H, W) arrays of the pixels one object paints.

    The silhouette is the object's mask (every pixel it covers); features are the pixels inside
    it painted in FEATURE_COLOUR instead of the object's colour (only faces have any).
    """
    x, y = anchor(position, image_size)
    h = half_extent(size, image_size)
    canvases = [Image.new("L", (image_size, image_size), 0) for _ in range(2)]
    silhouette, features = canvases
    DRAWERS[shape](_Pen(ImageDraw.Draw(silhouette), ImageDraw.Draw(features), x, y, h, pose))
    sil = np.asarray(silhouette) > 0
    return sil, (np.asarray(features) > 0) & sil
