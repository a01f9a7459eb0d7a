"""The labelled eta x seed contact sheet.

Imagic's result depends strongly on the interpolation weight eta and on the sampling seed, so
the useful artefact is one picture showing every combination side by side: one row per seed,
one column per eta, each labelled, so the user can pick a result without opening dozens of
files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = "white"
TEXT_COLOUR = "black"
MIN_FONT_SIZE = 10

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class _Layout:
    """Pixel geometry of the grid, computed once so drawing and sizing cannot disagree."""

    cell: tuple[int, int]
    rows: int
    cols: int
    pad: int
    line_height: int
    label_width: int
    col_width: int
    title_height: int
    min_width: int

    @property
    def images_left(self) -> int:
        """x of the first image column: padding, the row-label column, padding."""
        return 2 * self.pad + self.label_width

    @property
    def images_top(self) -> int:
        """y of the first image row: title line, padding, the header row, padding."""
        return self.title_height + 2 * self.pad + self.line_height

    @property
    def size(self) -> tuple[int, int]:
        """Canvas size: each column and row is followed by `pad` pixels of gap."""
        width = self.images_left + self.cols * (self.col_width + self.pad)
        height = self.images_top + self.rows * (self.cell[1] + self.pad)
        return max(width, self.min_width), height

    def column_centre(self, col: int) -> int:
        """x of the centre of column `col`, where both its label and its image are centred."""
        return self.images_left + col * (self.col_width + self.pad) + self.col_width // 2

    def cell_origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left corner of the image at (row, col)."""
        left = self.column_centre(col) - self.cell[0] // 2
        return left, self.images_top + row * (self.cell[1] + self.pad)


def make_grid(
    images: Sequence[Sequence[Image.Image]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str | None = None,
) -> Image.Image:
    """Lay `images[row][col]` out as a labelled grid: rows are seeds, columns are eta values.

    Column labels (e.g. "eta=0.7") form a header row, row labels (e.g. "seed 0") a left
    column, and `title`, if given, a line on top. Black text on white, with a few pixels
    between cells so neighbouring edits do not visually merge. The font scales with the cell
    size so labels stay legible on 512 px and 1024 px results alike.

    All images must have the same size (any size, any mode); the result is RGB. A shape
    mismatch is a programmer error and raises `ValueError`.
    """
    cell = _check_shape(images, row_labels, col_labels)
    font = ImageFont.load_default(size=_font_size(cell))
    layout = _layout(cell, font, row_labels, col_labels, title)
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        _draw_centred(draw, font, title, (canvas.width // 2, layout.pad + layout.line_height // 2))
    _draw_labels(draw, font, layout, row_labels, col_labels)
    for row, row_images in enumerate(images):
        for col, image in enumerate(row_images):
            canvas.paste(image.convert("RGB"), layout.cell_origin(row, col))
    return canvas


def _check_shape(
    images: Sequence[Sequence[Image.Image]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
) -> tuple[int, int]:
    """Check the grid is rectangular, labelled and uniform; return the common cell size."""
    if not images or not images[0]:
        raise ValueError("images must have at least one row and one column")
    if len(row_labels) != len(images):
        raise ValueError(f"got {len(row_labels)} row labels for {len(images)} rows")
    for index, row in enumerate(images):
        if len(row) != len(col_labels):
            raise ValueError(
                f"row {index} has {len(row)} images but there are {len(col_labels)} column labels"
            )
    sizes = {image.size for row in images for image in row}
    if len(sizes) != 1:
        raise ValueError(f"all images must have the same size, got {sorted(sizes)}")
    return sizes.pop()


def _font_size(cell: tuple[int, int]) -> int:
    """About 1/16 of the shorter cell side: readable at thumbnail and full size alike."""
    return max(MIN_FONT_SIZE, min(cell) // 16)


def _text_size(font: Font, text: str) -> tuple[int, int]:
    """Width and height of `text`'s ink box."""
    left, top, right, bottom = font.getbbox(text)
    return int(right - left), int(bottom - top)


def _layout(
    cell: tuple[int, int],
    font: Font,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str | None,
) -> _Layout:
    """Measure the labels and derive the grid geometry."""
    font_size = _font_size(cell)
    pad = max(4, font_size // 3)
    # "Ag" gives ascender and descender even when every label is digits only.
    line_height = max(_text_size(font, text)[1] for text in ["Ag", *row_labels, *col_labels])
    title_width = _text_size(font, title)[0] if title else 0
    return _Layout(
        cell=cell,
        rows=len(row_labels),
        cols=len(col_labels),
        pad=pad,
        line_height=line_height,
        label_width=max(_text_size(font, text)[0] for text in row_labels),
        col_width=max(cell[0], *(_text_size(font, text)[0] for text in col_labels)),
        title_height=line_height + pad if title else 0,
        min_width=title_width + 2 * pad,
    )


def _draw_labels(
    draw: ImageDraw.ImageDraw,
    font: Font,
    layout: _Layout,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
) -> None:
    """Draw column labels centred above their column and row labels centred beside their row."""
    header_y = layout.title_height + layout.pad + layout.line_height // 2
    for col, label in enumerate(col_labels):
        _draw_centred(draw, font, label, (layout.column_centre(col), header_y))
    label_x = layout.pad + layout.label_width // 2
    for row, label in enumerate(row_labels):
        row_y = layout.cell_origin(row, 0)[1] + layout.cell[1] // 2
        _draw_centred(draw, font, label, (label_x, row_y))


def _draw_centred(
    draw: ImageDraw.ImageDraw, font: Font, text: str, centre: tuple[int, int]
) -> None:
    """Draw `text` with its ink box centred on `centre`.

    Positioned from the measured box rather than with `anchor=`, which Pillow's bitmap
    fallback font (used when FreeType is missing) does not support.
    """
    left, top, right, bottom = font.getbbox(text)
    x = centre[0] - (left + right) / 2
    y = centre[1] - (top + bottom) / 2
    draw.text((x, y), text, fill=TEXT_COLOUR, font=font)
