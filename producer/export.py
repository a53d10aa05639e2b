"""Exporting results marked for review as image files and a CSV sheet for people to correct.

Redis data is untrusted here: whoever can write a result can choose its item path and label.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

from config.errors import ImageError
from recognizer import scan
from storage.labels import NUM_CLASSES

__all__ = ["export_review"]


def export_review(rows: list[dict[str, Any]], images: list[bytes | None], folder: Path) -> Path:
    """Write each row's image into ``folder`` and a ``labels.csv`` prefilled with the predicted
    labels, for a person to correct and feed back with ``producer label --csv``.

    Redis data is untrusted here: file names are made from the job id and the index alone
    (a row whose job id is not a plain token is skipped), the suffix from the image's own
    format, labels are written only when they are a digit, the sheet through the csv module,
    and no file is written through a link. Nothing lands outside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    sheet = [["path", "label"]]
    for row, data in zip(rows, images, strict=True):
        job, index = str(row.get("job", "")), row.get("index")
        if data is None or not _SAFE_JOB.fullmatch(job) or type(index) is not int or index < 0:
            continue
        name = f"{job}-{index:06d}{_suffix_of(data)}"
        _write_new(folder / name, data)
        label, text = row.get("label"), row.get("text")
        if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 64:  # a field: its reading
            sheet.append([name, text])
            continue
        sheet.append([name, str(label) if type(label) is int and 0 <= label < NUM_CLASSES else ""])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(sheet)
    path = folder / "labels.csv"
    _write_new(path, buf.getvalue().encode())
    return path


# Job ids are uuid4 hex; anything with a dot or a slash in it did not come from ``Jobs.create``.
_SAFE_JOB = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "DIB": ".bmp", "GIF": ".gif"}
_SUFFIXES |= {"WEBP": ".webp", "PPM": ".pnm"}


def _suffix_of(data: bytes) -> str:
    try:
        return _SUFFIXES.get(scan.probe(data, max_bytes=len(data) + 1, max_pixels=2**62).format, ".img")
    except ImageError:
        return ".img"


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, replacing a file there but never following a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
