"""A generated corpus of hostile inputs mixed with good ones, and what each must produce.

``write_corpus`` writes every file into a folder and returns, for each path as the producer
will report it, an ``Expect``: recognised (with the digit's label), a per-item error (the worker
reads the header but not the image), rejected at submit (the producer's header check or the
folder walk refuses it), or skipped (not a file: never an item). Everything is small and made
in well under a second, from real MNIST digits.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from bench.synth import encode, on_paper

__all__ = ["Expect", "write_corpus"]

Kind = Literal["ok", "error", "rejected", "skipped"]


@dataclass(frozen=True, eq=False)
class Expect:
    """One entry's fate: ``ok`` with ``label`` (``page`` is the grayscale page in [0, 1] it must
    read as), or an ``error`` / ``rejected`` whose message matches the regex ``pattern``."""

    kind: Kind
    pattern: str = ""
    label: int | None = None
    page: np.ndarray | None = field(default=None, repr=False)


DECODE = r"image data is truncated or corrupt \(\w[\w.]*: "
HEADER = r"image header is corrupt \(\w[\w.]*: |not a readable image"
BOMB = r"INKQ_MAX_IMAGE_PIXELS|decompression bomb"
NO_INK = r"no ink found"


def _tiff(entries: list[tuple[int, int, int, bytes]], *, next_ifd: int = 0, count: int | None = None) -> bytes:
    """A little-endian TIFF header and one IFD of (tag, type, count, payload) entries; payloads
    over four bytes go after the IFD. ``count`` may lie about the number of entries."""
    data_at = 8 + 2 + 12 * len(entries) + 4
    head, tail = b"", b""
    for tag, typ, n, payload in entries:
        if len(payload) <= 4:
            head += struct.pack("<HHI", tag, typ, n) + payload.ljust(4, b"\0")
        else:
            head += struct.pack("<HHII", tag, typ, n, data_at + len(tail))
            tail += payload
    size = len(entries) if count is None else count
    return b"II*\0" + struct.pack("<IH", 8, size) + head + struct.pack("<I", next_ifd) + tail


ORIENTATION, X_RESOLUTION = 0x0112, 0x011A
SHORT, ASCII, RATIONAL, SRATIONAL = 3, 2, 5, 10
ROTATE_6 = (ORIENTATION, SHORT, 1, struct.pack("<H", 6))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(width: int, height: int, *, payload: bool) -> bytes:
    """A grayscale PNG claiming ``width`` x ``height``; with ``payload`` its pixel data is really
    there (all zeros: a few hundred kilobytes that inflate to ``width * height`` bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = bytes(width + 1)
    body = b"".join(packer.compress(row) for _ in range(height if payload else 1)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _ztxt_bomb(good_png: bytes) -> bytes:
    """A valid PNG with a text chunk before its pixels that inflates to 64 MB."""
    packer = zlib.compressobj(9)
    text = b"".join(packer.compress(bytes(1 << 20)) for _ in range(64)) + packer.flush()
    at = 8 + 25  # after the signature and IHDR
    return good_png[:at] + _png_chunk(b"zTXt", b"bomb\0\0" + text) + good_png[at:]


def _jpeg_claiming(width: int, height: int, good_jpeg: bytes) -> bytes:
    """A JPEG whose frame header (SOF0) claims another size."""
    sof = good_jpeg.index(b"\xff\xc0")
    return good_jpeg[: sof + 5] + struct.pack(">HH", height, width) + good_jpeg[sof + 9 :]


def _flip(data: bytes, start: float, length: int = 64) -> bytes:
    """Overwrite ``length`` bytes from the given fraction of the file with 0xFF/0x00 garbage."""
    at = int(len(data) * start)
    garbage = bytes((0xFF if i % 3 else 0x00) for i in range(length))
    return data[:at] + garbage + data[at + length :]


def _without_segment(jpeg: bytes, marker: bytes) -> bytes:
    """The JPEG without its first ``marker`` segment (a quantisation table, say)."""
    at = jpeg.index(marker)
    (length,) = struct.unpack(">H", jpeg[at + 2 : at + 4])
    return jpeg[:at] + jpeg[at + 2 + length :]


def _patched_tiff(tiff: bytes, tag: int, value: int) -> bytes:
    """A single-IFD little-endian TIFF with one entry's inline value replaced."""
    out = bytearray(tiff)
    (ifd,) = struct.unpack("<I", tiff[4:8])
    (entries,) = struct.unpack("<H", tiff[ifd : ifd + 2])
    for at in range(ifd + 2, ifd + 2 + 12 * entries, 12):
        if struct.unpack("<H", tiff[at : at + 2])[0] == tag:
            out[at + 8 : at + 12] = struct.pack("<I", value)
    return bytes(out)


def write_corpus(folder: Path, digits: np.ndarray, labels: np.ndarray) -> dict[str, Expect]:
    """Write the corpus into ``folder`` (created) from 12 MNIST ``digits`` (uint8, 28x28 each,
    white ink on black) and their ``labels``; returns each path (as the producer reports it,
    and for folders and links as the walk does) -> what it must produce."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Expect] = {}
    pages = [on_paper(d) for d in digits[:12]]  # dark ink on white paper, as scans are
    big = [p.resize((56, 56), Image.Resampling.BILINEAR) for p in pages]

    def put(name: str, data: bytes, expect: Expect) -> None:
        (folder / name).write_bytes(data)
        out[str(folder / name)] = expect

    def ok(n: int, page: Image.Image | None = None) -> Expect:
        shown = np.asarray((pages[n] if page is None else page).convert("L"), np.float32) / 255
        return Expect("ok", label=int(labels[n]), page=shown)

    for n in range(4):
        put(f"good-{n}.png", encode(pages[n], "PNG"), ok(n))

    # Modes and containers: each must read as its digit.
    page, inked = big[4], big[4].point(lambda v: 255 if v > 128 else 0)
    alpha = Image.merge("LA", [Image.new("L", page.size, 0), Image.fromarray(255 - np.asarray(page))])
    put("palette.png", encode(page.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), ok(4, page))
    put("cmyk.jpg", encode(page.convert("CMYK"), "JPEG", quality=95), ok(4, page))
    put("gray16.png", encode(Image.fromarray(np.asarray(page, np.uint16) * 257), "PNG"), ok(4, page))
    put("gray-alpha.png", encode(alpha, "PNG"), ok(4, page))  # black ink, its paper transparent
    put("bilevel.png", encode(inked.convert("1"), "PNG"), ok(4, inked))
    put("digit.pbm", encode(inked.convert("1"), "PPM"), ok(4, inked))
    put("digit.pgm", encode(big[5], "PPM"), ok(5, big[5]))
    put("digit.ppm", encode(big[5].convert("RGB"), "PPM"), ok(5, big[5]))
    put("digit.bmp", encode(big[5], "BMP"), ok(5, big[5]))
    put("digit.webp", encode(big[5].convert("RGB"), "WEBP", lossless=True), ok(5, big[5]))
    put("digit.tif", encode(big[5], "TIFF", compression="tiff_deflate"), ok(5, big[5]))
    float_page = Image.fromarray(np.asarray(big[5], np.float32) / 255)
    put("float.tif", encode(float_page, "TIFF"), ok(5, big[5]))
    # Read at the first frame or page, whatever follows.
    put("animated.gif", encode(big[6], "GIF", save_all=True, append_images=[big[7]], duration=90), ok(6, big[6]))
    put("multipage.tif", encode(big[6], "TIFF", save_all=True, append_images=[big[7]]), ok(6, big[6]))
    plain_tiff = encode(big[6], "TIFF")
    (ifd,) = struct.unpack("<I", plain_tiff[4:8])
    next_at = ifd + 2 + 12 * struct.unpack("<H", plain_tiff[ifd : ifd + 2])[0]
    looped = plain_tiff[:next_at] + struct.pack("<I", ifd) + plain_tiff[next_at + 4 :]  # its next page is itself
    put("ifd-loop.tif", looped, ok(6, big[6]))

    # Hostile EXIF. The first is the poison of issue 8: Pillow's exif_transpose raises struct.error
    # re-encoding the -1/0 rational. Its orientation is still honoured (the page is stored turned).
    upright, turned = big[8], big[8].transpose(Image.Transpose.ROTATE_90)
    bad_rational = _tiff([ROTATE_6, (X_RESOLUTION, SRATIONAL, 1, struct.pack("<ii", -1, 0))])
    put("exif-bad-rational.jpg", encode(turned, "JPEG", quality=100, exif=b"Exif\0\0" + bad_rational), ok(8, upright))
    put("exif-bad-rational.png", encode(turned, "PNG", exif=b"Exif\0\0" + bad_rational), ok(8, upright))
    honoured = {  # hostile around a readable orientation: turned upright
        "ifd-loop": _tiff([ROTATE_6], next_ifd=8),
        "huge-rational": _tiff([ROTATE_6, (X_RESOLUTION, RATIONAL, 0x0FFFFFFF, struct.pack("<I", 40))]),
        "zero-rational": _tiff([ROTATE_6, (X_RESOLUTION, RATIONAL, 1, struct.pack("<II", 0, 0))]),
        "lying-count": _tiff([ROTATE_6], count=0xFFFF),  # the one real entry is still read
    }
    ignored = {  # no usable orientation: read as stored
        "orientation-9": _tiff([(ORIENTATION, SHORT, 1, struct.pack("<H", 9))]),
        "orientation-text": _tiff([(ORIENTATION, ASCII, 2, b"6\0")]),
        "garbage": b"II*\0\xff\xff\xff\x7f" + b"\xff" * 16,
    }
    for name, tiff in honoured.items():
        put(f"exif-{name}.jpg", encode(turned, "JPEG", quality=100, exif=b"Exif\0\0" + tiff), ok(8, upright))
    for name, tiff in ignored.items():
        put(f"exif-{name}.jpg", encode(big[9], "JPEG", quality=100, exif=b"Exif\0\0" + tiff), ok(9, big[9]))

    # Truncated and corrupt files of every supported format.
    source = big[10]
    formats = {
        "png": encode(source, "PNG"),
        "jpg": encode(source.convert("RGB"), "JPEG", quality=95),
        "tif": encode(source, "TIFF"),
        "bmp": encode(source, "BMP"),
        "gif": encode(source, "GIF"),
        "webp": encode(source.convert("RGB"), "WEBP", lossless=True),
        "pgm": encode(source, "PPM"),
        "ppm": encode(source.convert("RGB"), "PPM"),
        "pbm": encode(source.convert("1"), "PPM"),
    }
    for suffix, data in formats.items():
        # WEBP's decoder is set up from the whole file, so a cut one fails at the header check.
        expect = Expect("rejected", HEADER) if suffix == "webp" else Expect("error", DECODE)
        put(f"truncated.{suffix}", data[: len(data) // 2], expect)
    deflated = encode(source, "TIFF", compression="tiff_deflate")
    put("corrupt-crc.png", _flip(formats["png"], 0.6, 8), Expect("error", DECODE))
    put("corrupt-quant.jpg", _without_segment(formats["jpg"], b"\xff\xdb"), Expect("error", DECODE))
    put("corrupt-strip.tif", _flip(deflated, 0.3, 200), Expect("error", DECODE))
    put("corrupt-offset.tif", _patched_tiff(formats["tif"], 273, 1 << 20), Expect("error", DECODE))
    put("corrupt-header.bmp", formats["bmp"][:28] + b"\x07\x00" + formats["bmp"][30:], Expect("rejected", HEADER))
    put("corrupt-lzw.gif", _flip(formats["gif"], 0.5, 32), Expect("error", DECODE))
    put("corrupt-data.webp", _flip(formats["webp"], 0.5), Expect("error", DECODE))
    put("corrupt-maxval.pgm", b"P5\n56 56\n70000\n" + bytes(56 * 56 * 2), Expect("rejected", HEADER))

    # Decompression bombs: huge claims in the header, and small files that inflate hugely.
    put("bomb-header.png", _png_bomb(100_000, 100_000, payload=False), Expect("rejected", BOMB))
    put("bomb-zeros.png", _png_bomb(8_000, 8_000, payload=True), Expect("rejected", BOMB))
    put("bomb-text.png", _ztxt_bomb(formats["png"]), Expect("rejected", BOMB))
    put("bomb.jpg", _jpeg_claiming(65_000, 65_000, formats["jpg"]), Expect("rejected", BOMB))
    gif = bytearray(formats["gif"])
    gif[6:10] = struct.pack("<HH", 65_535, 65_535)  # the logical screen
    put("bomb.gif", bytes(gif), Expect("rejected", BOMB))

    # Nothing to read; nothing that is an image; names that break naive code.
    put("one-pixel.png", encode(Image.new("L", (1, 1), 0), "PNG"), Expect("error", NO_INK))
    put("blank-page.png", encode(Image.new("L", (120, 160), 247), "PNG"), Expect("error", NO_INK))
    nan = np.asarray(float_page, np.float32).copy()
    nan[:4] = np.nan
    put("not-finite.tif", encode(Image.fromarray(nan), "TIFF"), Expect("error", "not a number or infinite"))
    put("empty.png", b"", Expect("rejected", "empty"))
    put("notes.png", b"shopping list: milk, eggs\n" * 20, Expect("rejected", "not a readable image"))
    put("icon.png", encode(big[11], "ICO"), Expect("rejected", "not a readable image"))
    names = ["with space.png", "ünïcödé-数字.png", "-leading-dash.png", "new\nline.png", "long-" + "x" * 240 + ".png"]
    for n, name in enumerate(names):
        with contextlib.suppress(OSError):  # a file system that refuses the name: nothing to test there
            put(name, encode(pages[n], "PNG"), ok(n))
    (folder / "x.png").mkdir()  # a folder with an image's name: walked, not read
    out[str(folder / "x.png")] = Expect("skipped")
    put("x.png/inside.png", encode(pages[11], "PNG"), ok(11))
    (folder / "loop").symlink_to(".", target_is_directory=True)
    out[str(folder / "loop")] = Expect("rejected", "symbolic link loop")
    (folder / "self.png").symlink_to("self.png")
    out[str(folder / "self.png")] = Expect("rejected", "symbolic links")
    (folder / "dangling.png").symlink_to("nowhere.png")
    out[str(folder / "dangling.png")] = Expect("rejected", "broken symbolic link")
    return out
