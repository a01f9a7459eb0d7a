"""Unit tests for imagic.images: every bad input gets a fixable message, every mode gets RGB."""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from PIL import ExifTags, Image, ImageFile, features

from imagic import __version__, images
from imagic.errors import ImagicError, InvalidImageError
from imagic.images import (
    fit_to_resolution,
    image_digest,
    image_to_tensor,
    read_image,
    read_png_provenance,
    save_png,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise(size: tuple[int, int]) -> Image.Image:
    """Incompressible content, so cutting a file's tail really removes pixel data."""
    return Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 0) -> None:
    assert len(actual) == len(expected), (actual, expected)
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (
        actual,
        expected,
    )


def assert_message(error: pytest.ExceptionInfo[InvalidImageError], *parts: str) -> None:
    message = str(error.value)
    assert message.startswith("image "), message
    assert "Fix:" in message, message
    for part in parts:
        assert part in message, (part, message)


# --- bad inputs ------------------------------------------------------------------------------


def test_missing_file_names_path_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(InvalidImageError) as error:
        read_image(path)
    assert_message(error, str(path), "does not exist", "check the path")
    assert isinstance(error.value, ImagicError)


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError) as error:
        read_image(tmp_path)
    assert_message(error, str(tmp_path), "is a directory", "one image file")


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InvalidImageError) as error:
        read_image(path)
    assert_message(error, str(path), "0 bytes", "complete image file")


def test_text_file_renamed_png_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n" * 10)
    with pytest.raises(InvalidImageError) as error:
        read_image(path)
    assert_message(error, str(path), "not a recognised image", "PNG, JPEG")


def test_bytes_input_is_read() -> None:
    image = read_image(png_bytes(Image.new("RGB", (80, 70), RED)))
    assert image.mode == "RGB"
    assert image.size == (80, 70)
    assert image.getpixel((40, 35)) == RED


def test_bad_bytes_are_named_by_length() -> None:
    with pytest.raises(InvalidImageError) as error:
        read_image(b"x" * 17)
    assert_message(error, "<17 bytes>", "not a recognised image")


def test_empty_bytes_are_rejected() -> None:
    with pytest.raises(InvalidImageError) as error:
        read_image(b"")
    assert_message(error, "<0 bytes>", "0 bytes")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_rejected(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"cut.{fmt.lower()}"
    save(noise((128, 128)), path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(InvalidImageError) as error:
        read_image(path)
    assert_message(error, str(path), "truncated or corrupt", "re-export")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never switched on as a side effect


def test_too_small_names_size_and_minimum(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (63, 100), RED), tmp_path / "small.png")
    with pytest.raises(InvalidImageError) as error:
        read_image(path)
    assert_message(error, str(path), "63x100", "64 px", "at least 64x64")


def test_minimum_side_is_inclusive(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (64, 64), RED), tmp_path / "edge.png")
    assert read_image(path).size == (64, 64)


def test_min_side_is_configurable(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (40, 40), RED), tmp_path / "small.png")
    assert read_image(path, min_side=32).size == (40, 40)


# --- decompression bombs ---------------------------------------------------------------------


def big_truncated_png(tmp_path: Path) -> Path:
    """A 1100x1100 PNG with its tail cut off: decoding it would fail, reading its header not."""
    path = tmp_path / "big.png"
    save(Image.frombytes("L", (1100, 1100), os.urandom(1100 * 1100)), path, compress_level=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_megapixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = big_truncated_png(tmp_path)
    with pytest.raises(InvalidImageError) as error:
        read_image(path, max_megapixels=1.0)
    # The size error wins over the truncation, so no pixel was decoded.
    assert_message(
        error, str(path), "1100x1100", "1.21 MP", "1 MP", "downscale", "--max-megapixels"
    )


def test_same_file_under_a_higher_limit_reaches_decoding(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="truncated"):
        read_image(big_truncated_png(tmp_path), max_megapixels=2.0)


def test_pillow_bomb_error_becomes_invalid_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(Image.new("RGB", (64, 64), RED), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 px > 2 x limit: Pillow errors
    with pytest.raises(InvalidImageError) as error:
        read_image(path)
    assert_message(error, str(path), "decompression-bomb", "downscale")


def test_pillow_bomb_warning_does_not_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(Image.new("RGB", (64, 64), RED), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 px: Pillow only warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).getpixel((0, 0)) == RED


# --- animation and orientation ---------------------------------------------------------------


def animated(tmp_path: Path, name: str, **kwargs: object) -> Path:
    frames = [Image.new("RGB", (64, 64), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / name
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **kwargs)
    return path


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("anim.gif", {}),
        ("anim.png", {}),
        pytest.param(
            "anim.webp",
            {"lossless": True},
            marks=pytest.mark.skipif(not features.check("webp"), reason="no WebP support"),
        ),
    ],
)
def test_animated_image_uses_frame_zero_with_warning(
    tmp_path: Path, name: str, kwargs: dict[str, object]
) -> None:
    path = animated(tmp_path, name, **kwargs)
    with pytest.warns(
        UserWarning, match=r"animated image with 3 frames: using frame 0 \(the first\)"
    ):
        image = read_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((32, 32)) == RED


def test_still_image_does_not_warn(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (64, 64), RED), tmp_path / "still.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(path)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (100, 64), BLUE)
    image.paste(RED, (0, 0, 50, 64))  # left half red
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored rotated: display turned 90 degrees clockwise
    path = save(image, tmp_path / "rotated.jpg", exif=exif, quality=95)
    result = read_image(path)
    assert result.size == (64, 100)
    assert_close(result.getpixel((32, 20)), RED, tolerance=8)  # left edge became the top
    assert_close(result.getpixel((32, 80)), BLUE, tolerance=8)


def test_min_side_is_checked_after_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    path = save(Image.new("RGB", (100, 40), RED), tmp_path / "rotated.jpg", exif=exif)
    with pytest.raises(InvalidImageError) as error:
        read_image(path)
    assert_message(error, "40x100")


# --- mode conversion -------------------------------------------------------------------------


def palette_with_transparency() -> Image.Image:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.paste(1, (0, 0, 32, 64))  # left half palette index 1 = red
    image.info["transparency"] = 0  # index 0 (black) is transparent
    return image


def greyscale_16bit() -> Image.Image:
    image = Image.new("I;16", (64, 64), 65535)
    image.paste(Image.new("I;16", (32, 64), 32768), (32, 0))  # paste(int) is a no-op for I;16
    return image


@pytest.mark.parametrize(
    ("image", "suffix", "pixels", "tolerance"),
    [
        (Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "png", {(5, 5): WHITE}, 0),
        (Image.new("RGBA", (64, 64), (255, 0, 0, 128)), "png", {(5, 5): (255, 127, 127)}, 1),
        (Image.new("LA", (64, 64), (0, 0)), "png", {(5, 5): WHITE}, 0),
        (Image.new("LA", (64, 64), (0, 255)), "png", {(5, 5): BLACK}, 0),
        (palette_with_transparency(), "png", {(5, 5): RED, (60, 5): WHITE}, 0),
        (Image.new("L", (64, 64), 77), "png", {(5, 5): (77, 77, 77)}, 0),
        (Image.new("1", (64, 64), 1), "png", {(5, 5): WHITE}, 0),
        (greyscale_16bit(), "png", {(5, 5): WHITE, (60, 5): (128, 128, 128)}, 0),
        (Image.new("F", (64, 64), 0.5), "tiff", {(5, 5): (128, 128, 128)}, 0),
        (Image.new("CMYK", (64, 64), (0, 0, 0, 0)), "tiff", {(5, 5): WHITE}, 0),
        (Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "tiff", {(5, 5): RED}, 0),
    ],
    ids=[
        "rgba-clear",
        "rgba-half",
        "la-clear",
        "la-opaque",
        "p-transparency",
        "l",
        "1",
        "i16",
        "f",
        "cmyk-white",
        "cmyk-red",
    ],
)
def test_mode_is_converted_to_rgb(
    tmp_path: Path,
    image: Image.Image,
    suffix: str,
    pixels: dict[tuple[int, int], tuple[int, int, int]],
    tolerance: int,
) -> None:
    path = save(image, tmp_path / f"in.{suffix}")
    assert Image.open(path).mode == image.mode  # the file really stores the mode under test
    result = read_image(path)
    assert result.mode == "RGB"
    for xy, expected in pixels.items():
        assert_close(result.getpixel(xy), expected, tolerance)


def test_32bit_integer_is_stretched_not_clipped(tmp_path: Path) -> None:
    image = Image.new("I", (64, 64), 0)
    image.paste(1_000_000, (32, 0, 64, 64))
    path = save(image, tmp_path / "deep.tiff")
    result = read_image(path)
    assert result.getpixel((5, 5)) == BLACK
    assert result.getpixel((60, 5)) == WHITE


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("RGBa", (0, 0, 0, 0), WHITE),
        ("RGBa", (100, 50, 0, 128), (227, 177, 127)),
        ("La", (0, 0), WHITE),
        ("HSV", (0, 255, 255), RED),
        ("YCbCr", (255, 128, 128), WHITE),
        ("LAB", (255, 128, 128), WHITE),
    ],
)
def test_modes_without_a_file_format_convert(
    mode: str, colour: tuple[int, ...], expected: tuple[int, int, int]
) -> None:
    result = fit_to_resolution(Image.new(mode, (64, 64), colour), (64, 64))
    assert result.mode == "RGB"
    assert_close(result.getpixel((32, 32)), expected, tolerance=2)


# --- resizing --------------------------------------------------------------------------------


def three_bands() -> Image.Image:
    """400x200: red | green (the middle 200 px) | blue."""
    image = Image.new("RGB", (400, 200), GREEN)
    image.paste(RED, (0, 0, 100, 200))
    image.paste(BLUE, (300, 0, 400, 200))
    return image


def test_crop_covers_target_and_keeps_centre() -> None:
    result = fit_to_resolution(three_bands(), (100, 100), "crop")
    assert result.size == (100, 100)
    assert result.mode == "RGB"
    assert result.getpixel((50, 50)) == GREEN
    for corner in [(2, 2), (97, 2), (2, 97), (97, 97)]:
        assert_close(result.getpixel(corner), GREEN, tolerance=16)


def test_pad_fits_inside_on_white() -> None:
    result = fit_to_resolution(three_bands(), (100, 100), "pad")
    assert result.size == (100, 100)
    assert result.mode == "RGB"
    for corner in [(0, 0), (99, 0), (0, 99), (99, 99)]:
        assert result.getpixel(corner) == WHITE
    assert result.getpixel((50, 50)) == GREEN
    assert_close(result.getpixel((5, 50)), RED, tolerance=16)  # whole width kept
    assert_close(result.getpixel((95, 50)), BLUE, tolerance=16)


@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize("size", [(512, 512), (768, 512), (33, 77)])
def test_output_is_exactly_the_requested_size(mode: str, size: tuple[int, int]) -> None:
    assert fit_to_resolution(three_bands(), size, mode).size == size  # type: ignore[arg-type]


def test_unknown_fit_mode_is_a_programmer_error() -> None:
    with pytest.raises(ValueError, match="crop"):
        fit_to_resolution(three_bands(), (64, 64), "stretch")  # type: ignore[arg-type]


def test_non_positive_size_is_a_programmer_error() -> None:
    with pytest.raises(ValueError, match="size"):
        fit_to_resolution(three_bands(), (0, 64))


# --- tensors and digests ---------------------------------------------------------------------


def test_tensor_shape_dtype_and_range() -> None:
    image = Image.new("RGB", (3, 2), WHITE)
    image.putpixel((0, 0), RED)
    image.putpixel((2, 1), BLACK)
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 3, 2, 3)
    assert tensor.dtype == torch.float32
    assert tensor.min().item() == -1.0
    assert tensor.max().item() == 1.0
    assert tensor[0, :, 0, 0].tolist() == [1.0, -1.0, -1.0]  # red, channels first
    assert tensor[0, :, 1, 2].tolist() == [-1.0, -1.0, -1.0]  # black at (x=2, y=1)
    assert tensor[0, :, 0, 1].tolist() == [1.0, 1.0, 1.0]


def test_tensor_midgrey_is_near_zero() -> None:
    tensor = image_to_tensor(Image.new("RGB", (4, 4), (128, 128, 128)))
    assert torch.allclose(tensor, torch.full_like(tensor, 128 / 127.5 - 1), atol=1e-6)


def test_digest_is_sha256() -> None:
    assert image_digest(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert image_digest(b"imagic") == hashlib.sha256(b"imagic").hexdigest()


# --- writing ---------------------------------------------------------------------------------


PROVENANCE = {
    "eta": 0.7,
    "target_text": "a photo of a café ☕ with a 猫",
    "seeds": [0, 1],
    "params": {"lr": 0.001, "note": "ü"},
    "steps": 50,
}


def test_save_png_round_trips_pixels_and_provenance(tmp_path: Path) -> None:
    image = noise((64, 48))
    target = tmp_path / "edit.png"
    assert save_png(image, target, PROVENANCE) == target
    assert read_png_provenance(target) == {
        "eta": "0.7",
        "target_text": "a photo of a café ☕ with a 猫",
        "seeds": "[0, 1]",
        "params": '{"lr": 0.001, "note": "ü"}',
        "steps": "50",
    }
    with Image.open(target) as written:
        assert written.format == "PNG"
        assert written.text["Software"] == f"imagic {__version__}"  # type: ignore[attr-defined]
        assert written.convert("RGB").tobytes() == image.tobytes()
    assert sorted(os.listdir(tmp_path)) == ["edit.png"]  # no temp file left


def test_provenance_values_parse_back(tmp_path: Path) -> None:
    target = save_png(Image.new("RGB", (8, 8)), tmp_path / "p.png", {"eta": 0.1 + 0.2})
    assert float(read_png_provenance(target)["eta"]) == 0.1 + 0.2  # full precision kept
    params = save_png(
        Image.new("RGB", (8, 8)), tmp_path / "q.png", {"params": PROVENANCE["params"]}
    )
    assert json.loads(read_png_provenance(params)["params"]) == PROVENANCE["params"]


def test_save_png_overwrites_atomically(tmp_path: Path) -> None:
    target = tmp_path / "edit.png"
    save_png(Image.new("RGB", (8, 8), RED), target, {"run": "1"})
    save_png(Image.new("RGB", (8, 8), BLUE), target, {"run": "2"})
    assert read_png_provenance(target) == {"run": "2"}
    assert Image.open(target).convert("RGB").getpixel((0, 0)) == BLUE


def test_failed_save_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_midway(image: Image.Image, fp: io.BufferedWriter, filename: str) -> None:
        fp.write(b"\x89PNG\r\n\x1a\nhalf a file")
        raise OSError("No space left on device")

    previous = tmp_path / "kept.png"
    previous.write_bytes(b"earlier result")
    monkeypatch.setitem(Image.SAVE, "PNG", fail_midway)
    with pytest.raises(OSError, match="No space left"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "edit.png", {"eta": 0.5})
    with pytest.raises(OSError, match="No space left"):
        save_png(Image.new("RGB", (8, 8)), previous, {"eta": 0.5})
    assert not (tmp_path / "edit.png").exists()
    assert previous.read_bytes() == b"earlier result"
    assert sorted(os.listdir(tmp_path)) == ["kept.png"]


@pytest.mark.parametrize("key", ["", " eta", "x" * 80, "猫"])
def test_unstorable_provenance_key_is_a_programmer_error(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="provenance key"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "bad.png", {key: 1})
    assert os.listdir(tmp_path) == []


def test_foreign_png_has_no_provenance(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (8, 8)), tmp_path / "plain.png")
    assert read_png_provenance(path) == {}


def test_provenance_of_missing_file_is_invalid_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError) as error:
        read_png_provenance(tmp_path / "gone.png")
    assert_message(error, "gone.png", "does not exist")


def test_provenance_of_non_png_is_invalid_image(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (8, 8)), tmp_path / "photo.jpg")
    with pytest.raises(InvalidImageError) as error:
        read_png_provenance(path)
    assert_message(error, str(path), "not a readable PNG")


def test_saved_png_reads_back_through_read_image(tmp_path: Path) -> None:
    target = save_png(Image.new("RGB", (64, 64), GREEN), tmp_path / "out.png", {})
    assert read_image(target).getpixel((10, 10)) == GREEN
    assert images.PROVENANCE_PREFIX == "imagic:"
