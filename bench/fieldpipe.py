"""Fields end to end: generated field images -> `Client.submit(read=field)` -> a real worker ->
every field's result, beside single digits through the same stack in the same run.

The fields are drawn from MNIST *test* digits (reported figures): half 5-digit comb-box ZIP
codes, half free 3-8-digit strings with touching neighbours. Characters/s is the figure to set
beside single digits/s: a field costs its segmentation and one classification per candidate.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.pipeline import Stack
from bench.synth import STYLES, DigitPool, write_fields
from producer.client import Client

__all__ = ["fields_end_to_end", "write_field_set"]


def write_field_set(folder: Path, images: np.ndarray, labels: np.ndarray, count: int) -> dict[str, str]:
    """``count`` fields (comb and free alternating by halves) written under ``folder``: path -> text."""
    pool = DigitPool(images, labels)
    truth = write_fields(folder / "comb", pool, count // 2, STYLES["comb"], seed=31)
    return truth | write_fields(folder / "free", pool, count - count // 2, STYLES["free"], seed=32)


def fields_end_to_end(s: Stack, folder: Path, truth: dict[str, str], **worker: str) -> dict[str, Any]:
    """Throughput and accuracy of one worker reading every field under ``folder``."""
    with s.worker("bench-fields", **worker):
        client = Client(s.settings())
        start = time.perf_counter()
        report = client.submit([str(folder)], read={"kind": "field", "rule": None})
        status = client.wait(report.job, timeout=3600)
        seconds = time.perf_counter() - start
        assert status.complete, f"field run did not complete: {status}"
        rows = client.results(report.job)
    chars = sum(len(truth[r["item"]]) for r in rows)
    by_kind: dict[str, list[bool]] = {}
    for r in rows:
        by_kind.setdefault(Path(r["item"]).parent.name, []).append(r["text"] == truth[r["item"]])
    return {
        "fields": len(rows),
        "characters": chars,
        "seconds": seconds,
        "fields_per_second": len(rows) / seconds,
        "chars_per_second": chars / seconds,
        "exact": {kind: sum(hits) / len(hits) for kind, hits in by_kind.items()},
        "errors": sum(1 for r in rows if r["error"]),
        "review": sum(1 for r in rows if r["review"]),
        "missing_or_duplicated": len(rows) != len({r["item"] for r in rows}) or len(rows) != len(truth),
    }
