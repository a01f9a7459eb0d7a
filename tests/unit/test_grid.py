"""Unit tests for imagic.grid: geometry, labels and shape validation of the eta x seed grid."""

from __future__ import annotations

import itertools

import pytest
from PIL import Image, ImageChops

from imagic.grid import make_grid

CELL = (64, 48)
COLOURS = [
    [(200, 30, 30), (30, 200, 30), (30, 30, 200)],
    [(200, 200, 30), (30, 200, 200), (200, 30, 200)],
]
ROW_LABELS = ["seed 0", "seed 1"]
COL_LABELS = ["eta=0.7", "eta=0.8", "eta=0.9"]


def cells(colours: list[list[tuple[int, int, int]]], size: tuple[int, int] = CELL):
    return [[Image.new("RGB", size, colour) for colour in row] for row in colours]


def box_of(image: Image.Image, colour: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    """Bounding box of the pixels that are exactly `colour`."""
    difference = ImageChops.difference(image, Image.new("RGB", image.size, colour))
    red, green, blue = difference.split()
    total = ImageChops.add(ImageChops.add(red, green), blue)
    return total.point(lambda value: 255 if value == 0 else 0).getbbox()


def has_ink(image: Image.Image, box: tuple[int, int, int, int]) -> bool:
    """True if the region holds dark (text) pixels; the background there is white."""
    low, _ = image.crop(box).convert("L").getextrema()
    return low < 128


def grid(**kwargs: object) -> Image.Image:
    return make_grid(cells(COLOURS), ROW_LABELS, COL_LABELS, **kwargs)  # type: ignore[arg-type]


def test_each_image_is_placed_whole_in_order() -> None:
    result = grid()
    assert result.mode == "RGB"
    boxes = [[box_of(result, colour) for colour in row] for row in COLOURS]
    for row in boxes:
        for box in row:
            assert box is not None
            assert (box[2] - box[0], box[3] - box[1]) == CELL
    for row in boxes:  # columns left to right, a gap of a few pixels between them
        for left, right in itertools.pairwise(row):
            assert left[1] == right[1]
            assert 2 <= right[0] - left[2] <= 16
    for top, bottom in zip(boxes[0], boxes[1], strict=True):  # rows top to bottom
        assert top[0] == bottom[0]
        assert 2 <= bottom[1] - top[3] <= 16


def test_labels_are_drawn_left_and_above() -> None:
    result = grid()
    first = box_of(result, COLOURS[0][0])
    last = box_of(result, COLOURS[0][2])
    assert first is not None and last is not None
    assert first[0] > 10 and first[1] > 10  # room for the row-label column and header row
    header = (first[0], 0, last[2], first[1])
    row_label = (0, first[1], first[0], first[3])
    assert has_ink(result, header)
    assert has_ink(result, row_label)
    for colour in COLOURS[0]:  # each column header sits over its own column
        box = box_of(result, colour)
        assert box is not None
        assert has_ink(result, (box[0], 0, box[2], first[1]))


def test_background_is_white_between_cells() -> None:
    result = grid()
    first = box_of(result, COLOURS[0][0])
    second = box_of(result, COLOURS[0][1])
    assert first is not None and second is not None
    gap = result.crop((first[2], first[1], second[0], first[3]))
    assert gap.getextrema() == ((255, 255), (255, 255), (255, 255))
    assert result.getpixel((result.width - 1, result.height - 1)) == (255, 255, 255)


def test_size_grows_by_one_cell_and_gap_per_row_and_column() -> None:
    def size(rows: int, cols: int) -> tuple[int, int]:
        images = [[Image.new("RGB", CELL, "red")] * cols for _ in range(rows)]
        labels = [f"seed {row}" for row in range(rows)]
        return make_grid(images, labels, [f"eta=0.{col}" for col in range(cols)]).size

    one = size(1, 1)
    wide = size(1, 3)
    tall = size(4, 1)
    step_x = (wide[0] - one[0]) / 2
    step_y = (tall[1] - one[1]) / 3
    assert step_x == int(step_x) and step_y == int(step_y)
    assert CELL[0] + 2 <= step_x <= CELL[0] + 16  # a column is one cell plus a small gap
    assert CELL[1] + 2 <= step_y <= CELL[1] + 16
    assert wide[1] == one[1] and tall[0] == one[0]
    assert size(4, 3) == (wide[0], tall[1])


def test_title_adds_a_line_on_top() -> None:
    plain = grid()
    titled = grid(title="a photo of a sitting dog")
    extra = titled.height - plain.height
    assert extra > 8
    assert titled.width == plain.width
    assert has_ink(titled, (0, 0, titled.width, extra))
    assert not has_ink(plain, (0, 0, plain.width, 3))
    assert box_of(titled, COLOURS[0][0])[1] == box_of(plain, COLOURS[0][0])[1] + extra  # type: ignore[index]


def test_long_title_widens_the_canvas() -> None:
    title = "a very long title that is much wider than the grid of tiny cells below"
    result = make_grid(cells([[(200, 30, 30)]]), ["s"], ["e"], title=title)
    assert result.width > CELL[0] * 3


def test_long_column_label_widens_its_column() -> None:
    label = "eta=0.123456789 (interpolated)"
    result = make_grid(cells([[(200, 30, 30), (30, 200, 30)]]), ["seed 0"], [label, "eta=1"])
    first = box_of(result, (200, 30, 30))
    second = box_of(result, (30, 200, 30))
    assert first is not None and second is not None
    assert second[0] - first[2] > 16  # the wide header pushed the next column right


def test_font_scales_with_cell_size() -> None:
    def header_height(cell: tuple[int, int]) -> int:
        result = make_grid(cells([[(200, 30, 30)]], cell), ["seed 0"], ["eta=0.7"])
        box = box_of(result, (200, 30, 30))
        assert box is not None
        return box[1]

    assert header_height((512, 512)) > 2 * header_height((64, 64))


def test_mixed_modes_give_rgb() -> None:
    images = [[Image.new("L", CELL, 100), Image.new("RGBA", CELL, (30, 200, 30, 255))]]
    result = make_grid(images, ["seed 0"], ["eta=0.1", "eta=0.2"])
    assert result.mode == "RGB"
    assert box_of(result, (100, 100, 100)) is not None
    assert box_of(result, (30, 200, 30)) is not None


@pytest.mark.parametrize(
    ("images", "row_labels", "col_labels", "message"),
    [
        ([], [], [], "at least one"),
        ([[]], ["seed 0"], [], "at least one"),
        (cells(COLOURS), ["seed 0"], COL_LABELS, "row labels"),
        (cells(COLOURS), ROW_LABELS, COL_LABELS[:2], "column labels"),
        (cells([COLOURS[0], COLOURS[1][:2]]), ROW_LABELS, COL_LABELS, "row 1 has 2"),
        (
            [[Image.new("RGB", CELL), Image.new("RGB", (65, 48))]],
            ["seed 0"],
            ["eta=0.1", "eta=0.2"],
            "same size",
        ),
    ],
    ids=["no-rows", "no-cols", "row-labels", "col-labels", "ragged", "sizes"],
)
def test_bad_shapes_raise_value_error(
    images: list[list[Image.Image]],
    row_labels: list[str],
    col_labels: list[str],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        make_grid(images, row_labels, col_labels)
