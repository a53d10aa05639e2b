"""How `producer results` prints results: JSON lines (every key of the documented schema) or CSV
(the columns a spreadsheet needs; a field job's reading is its ``text``)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, TextIO

__all__ = ["COLUMNS", "FIELD_COLUMNS", "write_results"]

COLUMNS = ["item", "label", "confidence", "top3", "model_version", "error"]
FIELD_COLUMNS = ["item", "text", "confidence", "review", "model_version", "error"]


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return ";".join(f"{label}:{conf:.4f}" for label, conf in value)
    return "" if value is None else value


def write_results(rows: Iterable[dict[str, Any]], fmt: str, out: TextIO, *, fields: bool = False) -> None:
    """Write ``rows`` as they come (a job's results are read page by page, never all at once)."""
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
        return
    columns = FIELD_COLUMNS if fields else COLUMNS
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in columns])
