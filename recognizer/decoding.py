"""Image files -> grayscale pages: validated, decoded, turned upright, reduced when huge.

Hostile input is the normal case: only the listed decoders ever see the bytes, limits on bytes
and pixels are checked from the header before any pixel is decoded, and any exception a decoder
raises on one file becomes an ``ImageError`` that names it, for that file alone.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from config.errors import ImageDecodeError, ImageError, ImageTooLargeError

__all__ = [
    "DECODE_MAX_SIDE",
    "SUPPORTED_FORMATS",
    "SUPPORTED_SUFFIXES",
    "ImageInfo",
    "decode",
    "decode_colour",
    "describe_exception",
    "probe",
]

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


def decode_colour(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Image bytes -> uint8 RGB (H, W, 3) as the page looks, for the field reader: a printed
    rule in a drop-out colour is told from ink by its colour. Same limits, orientation,
    transparency and errors as ``decode``."""
    img = _open(data, max_bytes, max_pixels)
    try:
        img.seek(0)
        upright = _load_upright(img)
        if upright.mode.startswith("I") or upright.mode == "F":  # 16-bit and float pages: via grey
            rgb = np.repeat(np.round(_grayscale(upright) * 255).astype(np.uint8)[..., None], 3, axis=2)
        else:
            if upright.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in upright.info:
                rgba = upright.convert("RGBA")
                upright = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            rgb = np.asarray(upright.convert("RGB"), dtype=np.uint8)
    except ImageError:
        raise
    except Exception as exc:
        raise _failure("image data is truncated or corrupt", exc) from exc
    return rgb


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
    reason = describe_exception(exc)
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


def describe_exception(exc: BaseException) -> str:
    """``type: message``, the type qualified by its module unless built in (``struct.error``)."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    message = " ".join(str(exc).split())
    text = f"{name}: {message}" if message else name
    return text if len(text) < 200 else text[:197] + "..."
