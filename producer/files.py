"""Finding the images under the paths a user gives (recursive, loop-safe, never fatal) and
checking each before it is stored: every refusal comes back as a reason, never an exception."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from config.errors import ImageError
from recognizer import scan
from recognizer.scan import SUPPORTED_SUFFIXES


@dataclass(frozen=True)
class Found:
    """A candidate image file, or a path that could not be walked (with the reason)."""

    path: str
    problem: str | None = None


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path``: at most ``limit + 1`` of them, so that a file
    over the limit (or one growing as it is read) shows it without being read whole. Opened
    without blocking: a FIFO or device under an image's name is refused, never waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.read(limit + 1)


def read_found(found: Found, max_bytes: int) -> bytes | str:
    """The file's bytes (at most one past the limit, for ``probe_image`` to refuse), else why not."""
    if found.problem:
        return found.problem
    try:
        return read_capped(Path(found.path), max_bytes)
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"


def probe_image(data: bytes, max_bytes: int, max_pixels: int) -> bytes | str:
    """``data`` if it is a plausible image within the limits, else why not (cheap: header only).

    Never raises for a file's sake: whatever a hostile file does, it comes back as a reason.
    """
    if len(data) > max_bytes:
        return f"file is over the limit of {max_bytes:,} bytes (INKQ_MAX_IMAGE_BYTES)"
    try:
        scan.probe(data, max_bytes=max_bytes, max_pixels=max_pixels)
    except ImageError as exc:
        return str(exc)
    except Exception as exc:  # defence in depth: scan promises ImageError, a reason all the same
        return f"not a readable image ({type(exc).__name__}: {exc})"
    return data


def find_images(paths: list[str]) -> Iterator[Found]:
    """Every file with a supported image suffix under ``paths``, in a stable order.

    Symlinked folders are followed once; a loop is reported, not followed. Unreadable folders
    and missing paths are reported. Files named explicitly are taken whatever their suffix.
    """
    seen_dirs: set[tuple[int, int]] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from _walk(path, seen_dirs)
        elif path.is_file():
            yield Found(str(path))
        elif path.is_symlink():
            yield Found(str(path), "broken symbolic link")
        else:
            yield Found(str(path), "no such file or folder")


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[Found]:
    try:
        st = folder.stat()
    except OSError as exc:
        yield Found(str(folder), f"cannot read folder: {exc.strerror or exc}")
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        yield Found(str(folder), "symbolic link loop (folder already visited)")
        return
    seen.add(key)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        yield Found(str(folder), f"cannot read folder: {exc.strerror or exc}")
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=True):
                yield from _walk(path, seen)
            elif entry.is_file(follow_symlinks=True):
                if path.suffix.lower() in SUPPORTED_SUFFIXES:
                    yield Found(str(path))
            elif entry.is_symlink():
                yield Found(str(path), "broken symbolic link")
        except OSError as exc:
            yield Found(str(path), f"cannot read: {exc.strerror or exc}")
