"""Scan preprocessing: any common image file -> the MNIST convention, for training and serving.

One function, ``prepare``, turns a grayscale page into what MNIST's authors did with their
digits: bright ink on a dark background, the ink's bounding box scaled to fit 20x20 with its
aspect ratio kept, placed in 28x28 so that its centre of mass sits at the centre. Training
runs MNIST's own images through ``prepare`` too, so serving and training see the same thing;
on an MNIST image it is the identity in effect (the box already fits and is centred).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

from config.errors import BlankImageError, ImageDecodeError, ImageError, ImageTooLargeError

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "PREPROCESS_VERSION",
    "SIZE",
    "SUPPORTED_FORMATS",
    "SUPPORTED_SUFFIXES",
    "ImageInfo",
    "decode",
    "frame",
    "normalize",
    "prepare",
    "preprocess",
    "probe",
]

# Bumped whenever the output of ``prepare`` changes; recorded with every model version.
PREPROCESS_VERSION = "mnist-box20-com28/1"

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
SIZE = 28
BOX = 20
# Pixel index that MNIST's centres of mass average to (measured on its training set).
CENTRE = 14.0
# Below this ink-to-paper contrast (on a 0..1 scale) there is nothing to read.
MIN_CONTRAST = 0.12
# Pages larger than this (shorter side, pixels) are median-filtered: strokes there are several
# pixels wide and survive, while salt-and-pepper noise and scanner dust do not.
DENOISE_MIN_SIDE = 64
# A page larger than this on its long side is decoded reduced (JPEG's own DCT scaling, then a box
# filter) to between half and all of it: one digit needs far fewer pixels, and a 12-megapixel
# photo then costs tens of milliseconds instead of most of a second. Smaller pages are untouched.
DECODE_MAX_SIDE = 1024

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "TIFF", "BMP", "DIB", "GIF", "WEBP", "PPM"})
# Only these decoders ever see the bytes: Pillow's other plugins (EPS, PSD, FITS, ...) are never
# tried. MPO has no opener of its own: JPEG's returns it.
_OPEN_FORMATS = sorted(SUPPORTED_FORMATS - {"MPO"})
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the page upright (as Pillow's exif_transpose does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SUPPORTED_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    frames: int


def _open(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"image is {len(data):,} bytes, over the limit of {max_bytes:,} (INKQ_MAX_IMAGE_BYTES)"
        )
    if not data:
        raise ImageDecodeError("image file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"not a readable image: unknown format or not an image file (supported: {', '.join(_OPEN_FORMATS)})"
        ) from exc
    except Exception as exc:  # Pillow raises many types on hostile headers; each fails this image only
        raise _failure("image header is corrupt", exc) from exc
    if img.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(
            f"unsupported image format {img.format}; supported: {', '.join(sorted(SUPPORTED_FORMATS))}"
        )
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (INKQ_MAX_IMAGE_PIXELS)"
        )
    if width == 0 or height == 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    return img


def probe(data: bytes, *, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Cheap validation from the header alone: format, size and limits, without decoding pixels.

    Raises ``ImageError`` (and nothing else) for any file that fails.
    """
    img = _open(data, max_bytes, max_pixels)
    try:
        frames = int(getattr(img, "n_frames", 1))
    except Exception:  # a broken later frame: only the first is ever read
        frames = 1
    return ImageInfo(img.format or "", img.size[0], img.size[1], frames)


def decode(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Image bytes -> float32 grayscale in [0, 1] as the page looks (0 is black).

    Multi-page TIFFs and animated GIFs are read at their first page or frame; EXIF orientation
    is applied; transparency is composited over white paper. Raises ``ImageError`` (and nothing
    else) for any file that cannot be read, naming the underlying exception.
    """
    img = _open(data, max_bytes, max_pixels)
    try:
        img.seek(0)
        # Decoded here, so that a decoding error is never mistaken for unreadable metadata.
        gray = _grayscale(_load_upright(img))
    except ImageError:
        raise
    except Exception as exc:
        raise _failure("image data is truncated or corrupt", exc) from exc
    if not np.isfinite(gray).all():
        raise ImageDecodeError("image has pixels that are not a number or infinite (a corrupt float image)")
    return gray


def _load_upright(img: Image.Image) -> Image.Image:
    """The pixels, turned as the EXIF orientation says, and reduced to at most DECODE_MAX_SIDE on
    the long side when the page is larger."""
    factor = -(-max(img.size) // DECODE_MAX_SIDE)
    if factor >= 2 and img.format == "JPEG":
        # The decoder scales by 1/2, 1/4 or 1/8 while decoding, never below the size asked for.
        img.draft(img.mode, (img.size[0] // factor, img.size[1] // factor))
    img.load()
    orientation = _orientation(img)  # read before reduce(), which drops the metadata
    method = None if orientation is None else _UPRIGHT.get(orientation)
    factor = -(-max(img.size) // DECODE_MAX_SIDE)
    if factor >= 2 and img.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        img = img.reduce(factor)
    return img if method is None else img.transpose(method)


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation tag, or None. Only that one tag is read: Pillow's ``exif_transpose``
    also re-encodes the whole EXIF block, and raises (struct.error, ZeroDivisionError, ...) on
    hostile values in tags we never use. An EXIF block that cannot be read at all, or an
    orientation that is not an integer, leaves the page as stored."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # unreadable metadata must not cost a readable page
        return None
    return orientation if type(orientation) is int else None


def _failure(what: str, exc: Exception) -> ImageError:
    """The ``ImageError`` for an exception Pillow or numpy raised on one image's bytes."""
    reason = _reason(exc)
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)) or (
        # Pillow's cap on inflating PNG text and ICC chunks (MAX_TEXT_CHUNK) says so only in words.
        isinstance(exc, ValueError) and "decompressed data too large" in str(exc).lower()
    ):
        return ImageTooLargeError(f"image refused as a decompression bomb ({reason})")
    if isinstance(exc, MemoryError):
        return ImageTooLargeError(f"image needs more memory than this process has ({reason})")
    return ImageDecodeError(f"{what} ({reason})")


def _grayscale(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32) / 65535.0
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if mode == "I" and arr.max(initial=0) > 255 else 255.0 if mode == "I" else 1.0
        return np.clip(arr / top, 0.0, 1.0)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, rgba)
    elif mode not in ("L", "RGB", "1", "P"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, ...: through RGB so luminance is right
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def prepare(gray: np.ndarray) -> np.ndarray:
    """A grayscale page in [0, 1] (either polarity) -> a 28x28 float32 MNIST-style image in [0, 1].

    Raises ``BlankImageError`` when there is no ink to read.
    """
    x = np.asarray(gray, dtype=np.float32)
    if x.ndim != 2:
        raise ImageDecodeError(f"expected a 2-D grayscale image, got shape {x.shape}")
    if min(x.shape) >= DENOISE_MIN_SIDE:
        x = np.asarray(Image.fromarray(x).filter(ImageFilter.MedianFilter(3)), dtype=np.float32)

    # Paper is what the border mostly shows; scans have light paper, MNIST a black field.
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    if float(np.median(border)) > 0.5:
        x = 1.0 - x
    paper = float(np.median(x))
    ink = float(x.max())
    if ink - paper < MIN_CONTRAST:
        raise BlankImageError(
            f"no ink found: contrast between ink and paper is {max(ink - paper, 0):.3f}, "
            f"below {MIN_CONTRAST} (blank or nearly blank image)"
        )
    x = (x - paper) / (ink - paper)

    # Paper texture and sensor noise: cut at four standard deviations of the paper. Ink is only
    # ever brighter than paper, so pixels darker than the paper level are pure noise: half of its
    # distribution (those exactly at the level, common in 8-bit images, count as half each).
    # A clean image such as MNIST has none, and keeps every faint edge pixel.
    below = x[x < 0]
    at_level = int(np.count_nonzero(x == 0))
    sigma = float(np.sqrt(2 * np.square(below).sum() / (2 * below.size + at_level))) if below.size else 0.0
    floor = min(0.45, 4.0 * sigma)
    x = np.clip(x, 0.0, 1.0)
    if floor > 0:
        x = np.where(x > floor, x, 0.0).astype(np.float32)

    return frame(x)


def frame(x: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] on a zero background -> MNIST's frame: the ink's box scaled to fit 20x20,
    its centre of mass at the centre of 28x28. Shared by whole-image digits and field characters.

    Raises ``BlankImageError`` when there is no solid ink.
    """
    x = _crop_to_ink(np.asarray(x, dtype=np.float32))

    h, w = x.shape
    scale = BOX / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    if (th, tw) != (h, w):
        x = np.asarray(Image.fromarray(x).resize((tw, th), Image.Resampling.LANCZOS), dtype=np.float32)
        x = np.clip(x, 0.0, 1.0)

    mass = float(x.sum())
    if mass <= 0:
        raise BlankImageError("no ink found after scaling")
    cy = float((x.sum(axis=1) * np.arange(th)).sum()) / mass
    cx = float((x.sum(axis=0) * np.arange(tw)).sum()) / mass
    top = min(max(round(CENTRE - cy), 0), SIZE - th)
    left = min(max(round(CENTRE - cx), 0), SIZE - tw)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + th, left : left + tw] = x
    return out


def _crop_to_ink(x: np.ndarray) -> np.ndarray:
    """Crop to the ink's bounding box: found from solid strokes (half contrast and up), then
    grown row by row over the faint anti-aliased edges touching it. Stray specks away from the
    strokes, which survive any noise floor on a large page, do not stretch the box."""
    strong = x > 0.5
    rows, cols = np.flatnonzero(strong.any(axis=1)), np.flatnonzero(strong.any(axis=0))
    if rows.size == 0:
        raise BlankImageError("no ink found after removing background noise")
    top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    height, width = x.shape
    for _ in range(max(2, round(0.1 * max(bottom - top + 1, right - left + 1)))):
        grew = False
        if top > 0 and x[top - 1, left : right + 1].any():
            top, grew = top - 1, True
        if bottom < height - 1 and x[bottom + 1, left : right + 1].any():
            bottom, grew = bottom + 1, True
        if left > 0 and x[top : bottom + 1, left - 1].any():
            left, grew = left - 1, True
        if right < width - 1 and x[top : bottom + 1, right + 1].any():
            right, grew = right + 1, True
        if not grew:
            break
    return x[top : bottom + 1, left : right + 1]


def normalize(image: np.ndarray) -> np.ndarray:
    """MNIST-style [0, 1] image -> the network's input: (1, 28, 28) float32, standardised."""
    return ((image - MNIST_MEAN) / MNIST_STD).astype(np.float32)[None]


def preprocess(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Image bytes -> the network's input, (1, 28, 28) float32. The serving entry point.

    Raises ``ImageError`` (and nothing else) for an image that cannot be recognised.
    """
    gray = decode(data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        return normalize(prepare(gray))
    except ImageError:
        raise
    except Exception as exc:  # a page no one foresaw must fail alone, with its cause named
        raise ImageDecodeError(f"image could not be preprocessed ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    """``type: message``, the type qualified by its module unless built in (``struct.error``)."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    message = " ".join(str(exc).split())
    text = f"{name}: {message}" if message else name
    return text if len(text) < 200 else text[:197] + "..."
