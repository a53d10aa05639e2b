"""Folders of generated fields for demos and benchmarks, and a contact sheet to look at them.

A folder holds ``field-00000.png``, ... beside ``labels.csv`` (``path,text``, paths relative to
the folder, the form `producer label` reads) and ``truth.jsonl`` (text, character boxes, cells,
kind and rotation of each image). Field i of a run with seed S is ``render_field(pool, (S, i))``:
the same whatever the count, so a larger set extends a smaller one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from bench.synth.fields import Field, FieldStyle, render_field
from bench.synth.glyphs import DigitPool

__all__ = ["LABELS_CSV", "TRUTH_JSONL", "contact_sheet", "tile_sheet", "write_fields"]

LABELS_CSV = "labels.csv"
TRUTH_JSONL = "truth.jsonl"


def write_fields(folder: Path, pool: DigitPool, count: int, style: FieldStyle, *, seed: int = 0) -> dict[str, str]:
    """``count`` fields written into ``folder`` (created) with their labels and ground truth;
    returns each image's path -> its text."""
    folder.mkdir(parents=True, exist_ok=True)
    truth: dict[str, str] = {}
    with (
        (folder / LABELS_CSV).open("w", newline="") as labels,
        (folder / TRUTH_JSONL).open("w") as details,
    ):
        writer = csv.writer(labels)
        writer.writerow(["path", "text"])
        for i in range(count):
            field = render_field(pool, (seed, i), style)
            name = f"field-{i:05d}.png"
            field.pil().save(folder / name)
            writer.writerow([name, field.text])
            row = {"path": name, "text": field.text, "kind": field.kind, "angle": round(field.angle, 3)}
            details.write(json.dumps(row | {"boxes": field.boxes, "cells": field.cells}) + "\n")
            truth[str(folder / name)] = field.text
    return truth


def contact_sheet(fields: Sequence[Field], *, columns: int = 3, width: int = 320, boxes: bool = False) -> Image.Image:
    """Fields tiled on one white image (each scaled to ``width`` pixels, its text beneath), for
    the README or a quick look; ``boxes`` outlines each character's ground-truth box in red."""
    tiles = []
    for field in fields:
        img = field.pil()
        if boxes:
            draw = ImageDraw.Draw(img)
            for x0, y0, x1, y1 in field.boxes:
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(220, 0, 0))
        scale = width / img.width
        img = img.resize((width, max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
        tile = Image.new("RGB", (width, img.height + 16), "white")
        tile.paste(img, (0, 0))
        ImageDraw.Draw(tile).text((2, img.height + 2), f"{field.kind}: {field.text}", fill=(0, 0, 0))
        tiles.append(tile)
    return tile_sheet(tiles, columns, width)


def tile_sheet(tiles: Sequence[Image.Image], columns: int, width: int, gap: int = 8) -> Image.Image:
    """Tiles ``width`` pixels wide laid out in rows of ``columns`` on one white image."""
    if not tiles:
        return Image.new("RGB", (width, 16), "white")
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    height = sum(max(t.height for t in row) for row in rows) + gap * (len(rows) + 1)
    sheet = Image.new("RGB", (columns * (width + gap) + gap, height), "white")
    y = gap
    for row in rows:
        for k, tile in enumerate(row):
            sheet.paste(tile, (gap + k * (width + gap), y))
        y += max(t.height for t in row) + gap
    return sheet
