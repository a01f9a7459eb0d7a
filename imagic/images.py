"""Read, validate, normalise and write images.

Every image that enters the pipeline goes through `read_image`, so this is the one place that
turns "whatever file the user had" into the 8-bit RGB picture the diffusion model expects, and
the one place that turns a bad file into an `InvalidImageError` the CLI can print (field, value,
fix) instead of a Pillow traceback. Outputs go through `save_png`, which records provenance in
the PNG itself so a result can always be traced back to the run that made it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import uuid
import warnings
from collections.abc import Mapping
from typing import Literal

import torch
from PIL import Image, ImageChops, ImageOps, PngImagePlugin, UnidentifiedImageError

from imagic import __version__
from imagic.errors import InvalidImageError

DEFAULT_MAX_MEGAPIXELS: float = 64.0
MIN_SIDE: int = 64

PROVENANCE_PREFIX = "imagic:"
# PNG text keywords are 1-79 Latin-1 characters (PNG spec 11.3.4.2).
_MAX_PNG_KEYWORD = 79

# Modes that carry straight (non-premultiplied) alpha and must be flattened.
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
# Modes whose colour is already multiplied by alpha; flattened without un-premultiplying.
_PREMULTIPLIED_MODES = frozenset({"RGBa", "La"})
# Modes that can carry a single transparent colour in `info["transparency"]` (PNG tRNS).
_KEYED_TRANSPARENCY_MODES = frozenset({"1", "L", "P", "RGB"})
# What Pillow raises for a file it recognised but cannot decode (truncated, corrupt).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)

# Only raster formats users edit; never formats Pillow hands to external programs (EPS runs
# Ghostscript) or rarely-audited decoders.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

ImageSource = str | os.PathLike[str] | bytes


def read_image(
    source: ImageSource,
    *,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    min_side: int = MIN_SIDE,
    name: str | None = None,
) -> Image.Image:
    """Read `source` (a path or the file's bytes) and return it as an 8-bit RGB image.

    `name` labels bytes in messages (e.g. the s3:// URI they were downloaded from).

    The checks run in the order that keeps a hostile or broken file cheap to reject: the
    pixel count is checked from the header *before* any pixel is decoded (a decompression bomb
    never gets allocated), then the whole image is decoded so a truncated file fails here and
    not halfway through a fine-tuning run.

    Choices the caller should know about:

    * Animated images (GIF, APNG, WebP, and multi-frame files such as MPO or TIFF) have no
      single "the image"; Imagic edits one picture, so frame 0 (the first, the one viewers
      show as the thumbnail) is used and a `UserWarning` says so.
    * EXIF orientation is applied first, so the size limits and everything downstream see the
      picture the way a photo viewer shows it.
    * Transparent areas become white, as most editors display them, because the model has no
      alpha channel and black (Pillow's plain `convert("RGB")`) would invent dark content.
    * 16-bit and 32-bit greyscale is rescaled to 8 bits rather than clipped, which would turn
      most real 16-bit scans solid white; see `_value_range` for how the range is chosen.
    * Truncated files are always an error: `ImageFile.LOAD_TRUNCATED_IMAGES` is neither set
      nor relied on (it is process-wide, and a half-grey image is a silent wrong answer).

    Raises `InvalidImageError` for every problem a user can fix; the message names the field
    (`image`), the value (the path, or `<N bytes>`) and what to do instead.
    """
    _check_limits(max_megapixels, min_side)
    label = f"'{name}'" if name else _describe(source)
    data = _read_source(source, label)
    image, frames = _decode(data, label, max_megapixels)
    if frames > 1:
        warnings.warn(
            f"image {label}: animated image with {frames} frames: using frame 0 (the first)",
            UserWarning,
            stacklevel=2,
        )
    _check_min_side(image.size, label, min_side)
    return _normalise(image, label)


def fit_to_resolution(
    image: Image.Image,
    size: tuple[int, int],
    mode: Literal["crop", "pad"] = "crop",
) -> Image.Image:
    """Resize `image` to exactly `size` (width, height) without distorting it.

    "crop" scales until the image covers the target and cuts the overflow evenly from both
    sides, so the subject (usually centred) fills the frame. "pad" scales until the image fits
    and centres it on white, so nothing is lost. LANCZOS is used because downscaling is the
    common case and it aliases least. Any mode is accepted and flattened like `read_image`.

    An unknown `mode` or a non-positive size is a programmer error (the config validates both
    upstream), hence `ValueError` rather than `InvalidImageError`.
    """
    target = _check_size(size)
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    rgb = _to_rgb(image)
    if mode == "crop":
        return ImageOps.fit(rgb, target, method=Image.Resampling.LANCZOS)
    return ImageOps.pad(rgb, target, method=Image.Resampling.LANCZOS, color="white")


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """Return `image` as a float32 (1, 3, H, W) tensor in [-1, 1], the diffusers VAE input.

    Goes through raw bytes rather than numpy so the module needs nothing beyond torch and
    Pillow.
    """
    rgb = _to_rgb(image)
    raw = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    pixels = raw.view(rgb.height, rgb.width, 3).permute(2, 0, 1).unsqueeze(0)
    return (pixels.to(torch.float32) / 127.5 - 1.0).contiguous()


def image_digest(data: bytes) -> str:
    """Return the sha256 hex digest of the input file's bytes, used to key caches and runs."""
    return hashlib.sha256(data).hexdigest()


def save_png(
    image: Image.Image,
    path: str | os.PathLike[str],
    provenance: Mapping[str, object],
) -> pathlib.Path:
    """Write `image` as a PNG at `path` with `provenance` stored in its text chunks.

    Each key becomes its own iTXt chunk `imagic:<key>` (iTXt is UTF-8, so prompts in any
    language survive), plus a `Software` chunk naming this version, so the file alone says how
    it was made. The write is atomic: the PNG goes to a temporary file in the same directory and
    is then renamed over `path`, so a crash or a full disk never leaves a half-written PNG (or
    destroys an earlier one) under the final name.
    """
    target = pathlib.Path(path)
    info = _png_info(provenance)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        _write_png(image, temp, info)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def read_png_provenance(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the provenance `save_png` stored in `path`, with the `imagic:` prefix removed.

    Other text chunks (Software, chunks added by other tools) are left out, so the result is
    exactly what was passed to `save_png`, stringified.
    """
    label = _describe(path)
    try:
        with Image.open(path, formats=["PNG"]) as image:
            text = dict(image.text)  # type: ignore[attr-defined]
    except FileNotFoundError:
        raise _error(label, "file does not exist", "check the path") from None
    except _DECODE_ERRORS as exc:
        raise _error(
            label, f"is not a readable PNG ({exc})", "pass a PNG written by imagic"
        ) from exc
    return {
        key.removeprefix(PROVENANCE_PREFIX): str(value)
        for key, value in text.items()
        if key.startswith(PROVENANCE_PREFIX)
    }


# --- reading ---------------------------------------------------------------------------------


def _check_limits(max_megapixels: float, min_side: int) -> None:
    """Reject nonsensical limits early; they come from validated config, so this is a bug."""
    if not max_megapixels > 0:
        raise ValueError(f"max_megapixels must be > 0, got {max_megapixels!r}")
    if min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side!r}")


def read_image_bytes(path: str | os.PathLike[str]) -> bytes:
    """The raw bytes of an image file, with the same clear errors as `read_image`.

    For callers that need the exact bytes too (content digests, cache keys).
    """
    return _read_source(path, _describe(path))


def _describe(source: object) -> str:
    """Name the input in messages: the path as given, or only the size for raw bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes>"
    if isinstance(source, str | os.PathLike):
        return f"'{os.fsdecode(source)}'"
    raise TypeError(f"image source must be a path or bytes, got {type(source).__name__}")


def _error(label: str, problem: str, fix: str) -> InvalidImageError:
    """Build the one message shape the CLI relies on: field, value, problem, fix."""
    return InvalidImageError(f"image {label}: {problem}. Fix: {fix}.")


def _read_source(source: ImageSource, label: str) -> bytes:
    """Return the file's bytes; reading them once lets paths and bytes share one decode path."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = _read_file(pathlib.Path(source), label)
    if not data:
        raise _error(
            label,
            "is empty (0 bytes)",
            "pass a complete image file (an empty file usually means a failed download or copy)",
        )
    return data


def _read_file(path: pathlib.Path, label: str) -> bytes:
    """Read `path`, turning the usual filesystem mistakes into user-facing errors."""
    if path.is_dir():
        raise _error(label, "is a directory, not an image file", "pass the path of one image file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _error(
            label,
            "file does not exist",
            "check the path (relative paths start from the current directory)",
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise _error(label, f"cannot be read ({reason})", "check the file's permissions") from exc


def _decode(data: bytes, label: str, max_megapixels: float) -> tuple[Image.Image, int]:
    """Decode frame 0 of `data` with EXIF orientation applied; also return the frame count.

    Pillow's own decompression-bomb warning is silenced because our limit, checked first, is
    the one the user controls; Pillow's hard error (twice its warning limit) still fires and is
    reported like every other problem.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                _check_megapixels(image.size, label, max_megapixels)
                frames = getattr(image, "n_frames", 1)
                image.load()
                return ImageOps.exif_transpose(image), frames
    except Image.DecompressionBombError as exc:
        raise _error(
            label,
            f"is too large for Pillow's decompression-bomb guard ({exc})",
            "downscale the image (this guard cannot be raised with --max-megapixels)",
        ) from exc
    except UnidentifiedImageError as exc:
        raise _error(
            label,
            "is not a recognised image format (or its header is damaged)",
            "pass a PNG, JPEG, WebP, GIF, BMP or TIFF file",
        ) from exc
    except _DECODE_ERRORS as exc:
        raise _error(
            label,
            f"is truncated or corrupt ({exc})",
            "re-export or re-download the image; it ends early or contains damaged data",
        ) from exc


def _check_megapixels(size: tuple[int, int], label: str, max_megapixels: float) -> None:
    """Refuse images above the limit using header dimensions only, before any allocation."""
    width, height = size
    megapixels = width * height / 1_000_000
    if megapixels > max_megapixels:
        raise _error(
            label,
            f"is {width}x{height} = {megapixels:.2f} MP, above the limit of {max_megapixels:g} MP",
            "downscale the image, or raise max_megapixels (--max-megapixels) if you trust the "
            "file and have the memory",
        )


def _check_min_side(size: tuple[int, int], label: str, min_side: int) -> None:
    """Refuse images too small to carry detail at the model's latent resolution."""
    width, height = size
    if min(width, height) < min_side:
        raise _error(
            label,
            f"is {width}x{height} px, below the minimum of {min_side} px on each side",
            f"use an image at least {min_side}x{min_side} px",
        )


def _normalise(image: Image.Image, label: str) -> Image.Image:
    """Flatten to RGB, reporting pixel formats Pillow cannot convert as the user's problem."""
    try:
        return _to_rgb(image)
    except ValueError as exc:
        raise _error(
            label,
            f"has pixel mode {image.mode!r}, which cannot be converted to RGB ({exc})",
            "re-save the image as an 8-bit RGB PNG or JPEG",
        ) from exc


# --- mode conversion -------------------------------------------------------------------------


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, flattening transparency onto white."""
    mode = image.mode
    if mode in _PREMULTIPLIED_MODES:
        return _premultiplied_over_white(image)
    if mode.startswith("I") or mode == "F":
        return _to_8bit(image).convert("RGB")
    if mode in _ALPHA_MODES or (mode in _KEYED_TRANSPARENCY_MODES and "transparency" in image.info):
        return _over_white(image.convert("RGBA"))
    if mode == "RGB":
        return image.copy()
    return image.convert("RGB")


def _over_white(rgba: Image.Image) -> Image.Image:
    """Alpha-composite straight-alpha RGBA over a white canvas."""
    background = Image.new("RGBA", rgba.size, "white")
    return Image.alpha_composite(background, rgba).convert("RGB")


def _premultiplied_over_white(image: Image.Image) -> Image.Image:
    """Flatten premultiplied alpha: over white, each channel is simply colour + (255 - alpha).

    Pillow cannot convert `La` at all, and un-premultiplying first would lose precision.
    """
    *colour, alpha = image.split()
    clear = ImageChops.invert(alpha)
    bands = [ImageChops.add(band, clear) for band in colour]
    merged = Image.merge("RGB", bands) if len(bands) == 3 else bands[0]
    return merged.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """Map a 16/32-bit integer or float greyscale image linearly onto 0..255 (mode L)."""
    low, high = _value_range(image)
    if image.mode != "F":
        image = image.convert("I")  # one 32-bit integer mode for all I;16 byte orders
    scale = 255.0 / (high - low) if high > low else 0.0
    offset = 0.5 - low * scale  # +0.5 rounds to nearest when Pillow truncates
    return image.point(lambda value: value * scale + offset).convert("L")


def _value_range(image: Image.Image) -> tuple[float, float]:
    """Return the input range that maps to black..white.

    The bit depth is the range when it is known (I;16 is 0..65535 whatever the content, so a
    dark scan stays dark). Mode `I` holding only 0..65535 is treated as 16-bit, because that is
    how Pillow represents 16-bit sources; float images in 0..1 are treated as normalised.
    Anything else is stretched from its own minimum to maximum, as no scale is implied.
    """
    if image.mode.startswith("I;16"):
        return 0.0, 65535.0
    low, high = image.getextrema()
    if image.mode == "I" and low >= 0 and high <= 65535:
        return 0.0, 65535.0
    if image.mode == "F" and low >= 0 and high <= 1:
        return 0.0, 1.0
    return float(low), float(high)


# --- resizing --------------------------------------------------------------------------------


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate a (width, height) pair of positive ints."""
    width, height = size
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"size must be (width, height) of positive ints, got {size!r}")
    return width, height


# --- writing ---------------------------------------------------------------------------------


def _png_info(provenance: Mapping[str, object]) -> PngImagePlugin.PngInfo:
    """Build the PNG text chunks: one iTXt per provenance key, plus Software."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"imagic {__version__}")
    for key, value in provenance.items():
        info.add_itxt(_chunk_keyword(key), _provenance_text(value))
    return info


def _chunk_keyword(key: str) -> str:
    """Return `imagic:<key>`, refusing keys the PNG format cannot store as a keyword."""
    keyword = f"{PROVENANCE_PREFIX}{key}"
    if isinstance(key, str) and key and key == key.strip() and _is_png_keyword(keyword):
        return keyword
    raise ValueError(
        f"provenance key {key!r} must be a non-empty printable Latin-1 string without "
        f"surrounding spaces, at most {_MAX_PNG_KEYWORD - len(PROVENANCE_PREFIX)} characters"
    )


def _is_png_keyword(keyword: str) -> bool:
    """True if `keyword` fits a PNG text chunk keyword: 1-79 printable Latin-1 characters."""
    if not (0 < len(keyword) <= _MAX_PNG_KEYWORD and keyword.isprintable()):
        return False
    try:
        keyword.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _provenance_text(value: object) -> str:
    """Stringify a provenance value: str as is, containers as JSON, the rest via `str`.

    `str` of a float is its shortest round-tripping repr, so `float(text)` gives the value back.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        value = dict(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _write_png(image: Image.Image, temp: pathlib.Path, info: PngImagePlugin.PngInfo) -> None:
    """Write and fsync the PNG, so the rename that follows never exposes unwritten data.

    The file is created with mode 0o666 so the umask applies, as for any ordinary output file
    (tempfile's 0o600 would survive the rename and hide results from other users).
    """
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(descriptor, "wb") as handle:
        image.save(handle, format="PNG", pnginfo=info)
        handle.flush()
        os.fsync(handle.fileno())
