"""Preprocessing: scans of every common format and mode -> the MNIST convention."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.synth import as_scan, encode
from config.errors import BlankImageError, ImageDecodeError, ImageTooLargeError
from recognizer import decoding, scan

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000}


def prepared(data: bytes, **limits: int) -> np.ndarray:
    return scan.prepare(scan.decode(data, **(LIMITS | limits)))


def reference(digit: np.ndarray) -> np.ndarray:
    return scan.prepare(digit.astype(np.float32) / 255)


def close(a: np.ndarray, b: np.ndarray, tol: float = 0.06) -> bool:
    return float(np.abs(a - b).mean()) < tol


def test_mnist_images_pass_through_unchanged(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    images = mnist_test[0][:1000].astype(np.float32) / 255
    out = np.stack([scan.prepare(x) for x in images])
    diff = np.abs(out - images).reshape(len(images), -1)
    assert float(diff.mean()) < 0.002
    assert float((diff.max(axis=1) < 1e-6).mean()) > 0.85  # most are bit-identical


def test_output_follows_mnist_convention(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    out = prepared(encode(as_scan(mnist_test[0][0])))
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 and out.max() > 0.9  # bright ink, dark background
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 20  # fits the 20x20 box
    ys, xs = np.mgrid[0:28, 0:28]
    com = ((out * ys).sum() / out.sum(), (out * xs).sum() / out.sum())
    assert abs(com[0] - 14) <= 0.5 and abs(com[1] - 14) <= 0.5  # centred by centre of mass


@pytest.mark.parametrize("index", range(8))
def test_white_paper_scan_matches_its_mnist_image(mnist_test: tuple[np.ndarray, np.ndarray], index: int) -> None:
    digit = mnist_test[0][index]
    page = as_scan(digit, at=(20 + 10 * index, 200 - 20 * index), seed=index)
    assert close(prepared(encode(page)), reference(digit))


def test_tinted_noisy_jpeg_scan_matches(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    digit = mnist_test[0][3]
    page = as_scan(digit, tint=(236, 224, 190), noise=14.0, page=(500, 700), at=(300, 40))
    assert close(prepared(encode(page, "JPEG", quality=70)), reference(digit), tol=0.08)


def _variants(page: Image.Image) -> dict[str, bytes]:
    gray = page.convert("L")
    arr16 = (np.asarray(gray, dtype=np.uint16) * 257).astype(np.uint16)
    rgba = page.convert("RGBA")
    # Transparent paper with opaque ink: must be read as ink on white.
    alpha = 255 - np.asarray(gray)
    transparent = Image.fromarray(np.dstack([np.zeros_like(alpha)] * 3 + [alpha]).astype(np.uint8))
    multi = io.BytesIO()
    gray.save(multi, format="TIFF", save_all=True, append_images=[Image.new("L", gray.size, 255)])
    return {
        "png-L": encode(gray),
        "png-RGB": encode(page),
        "png-RGBA": encode(rgba),
        "png-RGBA-transparent": encode(transparent),
        "png-P": encode(page.convert("P", palette=Image.Palette.ADAPTIVE)),
        "png-I;16": encode(Image.fromarray(arr16)),
        "jpeg-RGB": encode(page, "JPEG", quality=90),
        "jpeg-CMYK": encode(page.convert("CMYK"), "JPEG", quality=90),
        "tiff-L": encode(gray, "TIFF"),
        "tiff-I;16": encode(Image.fromarray(arr16), "TIFF"),
        "tiff-CMYK": encode(page.convert("CMYK"), "TIFF"),
        "tiff-multipage": multi.getvalue(),
        "bmp-RGB": encode(page, "BMP"),
        "gif-P": encode(page.convert("L"), "GIF"),
        "webp-RGB": encode(page, "WEBP", quality=90),
    }


@pytest.mark.parametrize(
    "variant",
    [
        "png-L",
        "png-RGB",
        "png-RGBA",
        "png-RGBA-transparent",
        "png-P",
        "png-I;16",
        "jpeg-RGB",
        "jpeg-CMYK",
        "tiff-L",
        "tiff-I;16",
        "tiff-CMYK",
        "tiff-multipage",
        "bmp-RGB",
        "gif-P",
        "webp-RGB",
    ],
)
def test_every_format_and_mode(mnist_test: tuple[np.ndarray, np.ndarray], variant: str) -> None:
    digit = mnist_test[0][1]
    data = _variants(as_scan(digit, noise=3.0))[variant]
    assert close(prepared(data), reference(digit), tol=0.08), variant


def test_exif_orientation_is_honoured(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    digit = mnist_test[0][0]  # a 7: nothing like itself when turned
    upright = as_scan(digit, noise=2.0)
    # Stored rotated, with the EXIF tag saying how to turn it back upright.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to display
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    assert close(prepared(data), reference(digit), tol=0.08)
    assert not close(scan.prepare(np.asarray(stored.convert("L"), np.float32) / 255), reference(digit), tol=0.08)


def test_blank_page_is_an_error() -> None:
    with pytest.raises(BlankImageError, match="no ink"):
        prepared(encode(Image.new("L", (200, 300), 245)))


def test_uniform_noise_without_ink_is_blank() -> None:
    rng = np.random.default_rng(0)
    page = np.clip(rng.normal(240, 3, (300, 300)), 0, 255).astype(np.uint8)
    with pytest.raises(BlankImageError):
        prepared(encode(Image.fromarray(page)))


def test_truncated_image_is_a_decode_error(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    data = encode(as_scan(mnist_test[0][0]))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        prepared(data[: len(data) // 2])


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        prepared(data)


def test_too_many_bytes_is_rejected_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match="INKQ_MAX_IMAGE_BYTES"):
        prepared(b"x" * 2000, max_bytes=1000)


def test_decompression_bomb_is_rejected_from_the_header() -> None:
    bomb = encode(Image.new("L", (6000, 6000), 255))  # tiny file, 36 megapixels
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLargeError, match="INKQ_MAX_IMAGE_PIXELS"):
        scan.probe(bomb, max_bytes=10**6, max_pixels=10**6)
    with pytest.raises(ImageTooLargeError):
        prepared(bomb, max_pixels=10**6)


def test_probe_reads_only_the_header(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    data = encode(as_scan(mnist_test[0][0]))
    info = scan.probe(data[:200], **LIMITS)  # header alone is enough to validate
    assert (info.format, info.width, info.height) == ("PNG", 400, 300)


def test_preprocess_gives_network_input(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    x = scan.preprocess(encode(as_scan(mnist_test[0][0])), **LIMITS)
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    assert abs(float(x.min()) - (-scan.MNIST_MEAN / scan.MNIST_STD)) < 1e-5


def photo(digit: np.ndarray, fmt: str, orientation: int | None = None) -> bytes:
    """A 12-megapixel photo of one digit: dark ink, large on light, slightly noisy paper."""
    ink = Image.fromarray(255 - digit).resize((2400, 2400), Image.Resampling.BILINEAR)
    page = Image.new("L", (4000, 3000), 235)
    page.paste(ink, (800, 300))
    noise = np.random.default_rng(0).integers(-8, 8, (3000, 4000))
    page = Image.fromarray(np.clip(np.asarray(page, np.int16) + noise, 0, 255).astype(np.uint8)).convert("RGB")
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    page.save(out, fmt, quality=90, exif=exif.tobytes()) if fmt == "JPEG" else page.save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_large_photo_is_read_reduced_and_reads_the_same(
    mnist_test: tuple[np.ndarray, np.ndarray], fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = photo(mnist_test[0][0], fmt)
    reduced = scan.decode(data, **LIMITS)
    assert max(reduced.shape) <= decoding.DECODE_MAX_SIDE and max(reduced.shape) > decoding.DECODE_MAX_SIDE // 2
    monkeypatch.setattr(decoding, "DECODE_MAX_SIDE", 10**6)
    full = scan.decode(data, **LIMITS)
    assert full.shape == (3000, 4000)
    assert close(scan.prepare(reduced), scan.prepare(full), tol=0.02)
    assert close(scan.prepare(reduced), reference(mnist_test[0][0]), tol=0.06)


def test_a_large_photo_keeps_its_exif_orientation(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    upright = scan.decode(photo(mnist_test[0][0], "JPEG"), **LIMITS)
    turned = scan.decode(photo(mnist_test[0][0], "JPEG", orientation=6), **LIMITS)
    assert turned.shape == upright.shape[::-1]  # 6: stored turned a quarter, shown upright
