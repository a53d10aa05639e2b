"""Label intake: folders laid out by label, CSV files, and corrections of results.

Everything is validated before anything is written (label in range, file inside the given
folder, readable, decodable, with ink): a bad row rejects the whole intake with every problem
listed, and nothing half-written remains.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from config.errors import ImageError, InkqError
from config.settings import Settings
from producer.files import read_capped
from recognizer import scan
from recognizer.rules import MAX_LENGTH
from storage.labels import NUM_CLASSES


class LabelError(InkqError):
    """Label input was rejected; the message lists every problem."""


@dataclass(frozen=True)
class Candidate:
    path: Path
    label: str  # as given, validated later
    fields: bool = True  # may the label be a field's text (a folder per label holds digits only)


def from_folder(root: Path) -> list[Candidate]:
    """``root/<label>/*.png`` (any supported image type), labels being the digits 0-9."""
    if not root.is_dir():
        raise LabelError(f"{root} is not a folder")
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(sub.rglob("*")):
            if path.is_file() and path.suffix.lower() in scan.SUPPORTED_SUFFIXES:
                out.append(Candidate(path, sub.name, fields=False))
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in scan.SUPPORTED_SUFFIXES)
    if stray:
        raise LabelError(
            f"images directly in {root} have no label folder (expected {root}/<label>/...): " + ", ".join(stray[:10])
        )
    return out


def from_csv(csv_path: Path, root: Path | None = None) -> list[Candidate]:
    """Rows of ``path,label`` or ``path,text`` (a field's digits; a header row is optional);
    relative paths are read from the CSV's folder, and every path must lie inside ``root``
    (default: that folder)."""
    base = csv_path.parent.resolve()
    root = (root or base).resolve()
    try:
        rows = list(csv.reader(csv_path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read {csv_path}: {exc}") from exc
    out, problems = [], []
    for number, row in enumerate(rows, start=1):
        if not row or (number == 1 and [c.strip().lower() for c in row[:2]] in (["path", "label"], ["path", "text"])):
            continue
        if len(row) != 2:
            problems.append(f"{csv_path}:{number}: expected 2 columns (path,label), got {len(row)}")
            continue
        path = (base / row[0].strip()).resolve()
        if not path.is_relative_to(root):
            problems.append(f"{csv_path}:{number}: {row[0]} is outside {root}")
            continue
        out.append(Candidate(path, row[1].strip()))
    if problems:
        raise LabelError("rejected, nothing stored:\n  " + "\n  ".join(problems))
    return out


def parse_label(raw: str, *, fields: bool = True) -> int | str:
    """A digit 0-9 (a single character), or with ``fields`` the text of a field of 2 to
    MAX_LENGTH digits."""
    text = raw.strip()
    longest = MAX_LENGTH if fields else 1
    if not (text.isascii() and text.isdigit()) or len(text) > longest:
        also = f" nor a field's text of up to {MAX_LENGTH} digits" if fields else ""
        raise ValueError(f"label {raw!r} is not one of 0-{NUM_CLASSES - 1}{also}")
    return int(text) if len(text) == 1 else text


def validate(candidates: list[Candidate], settings: Settings) -> list[tuple[str, bytes, int | str, str]]:
    """(digest, bytes, label, path) for every candidate, or LabelError listing every problem."""
    samples, problems = [], []
    for c in candidates:
        try:
            label = parse_label(c.label, fields=c.fields)
            data = read_capped(c.path, settings.max_image_bytes)  # over: refused by scan
            scan.preprocess(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        except (ValueError, ImageError) as exc:
            problems.append(f"{c.path}: {exc}")
            continue
        except OSError as exc:
            problems.append(f"{c.path}: cannot read file: {exc.strerror or exc}")
            continue
        except Exception as exc:  # defence in depth: a hostile file is rejected by name, never a traceback
            problems.append(f"{c.path}: cannot use this image ({type(exc).__name__}: {exc})")
            continue
        samples.append((hashlib.sha256(data).hexdigest(), data, label, str(c.path)))
    if problems:
        raise LabelError(
            f"rejected {len(problems)} of {len(candidates)}, nothing stored:\n  " + "\n  ".join(problems[:50])
        )
    if not samples:
        raise LabelError("no labelled images found")
    return samples
