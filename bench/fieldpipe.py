"""Fields end to end: generated field images -> `Client.submit(read=field)` -> a real worker ->
every field's result, beside single digits through the same stack in the same run.

The fields are drawn from MNIST *test* digits (reported figures): half 5-digit comb-box ZIP
codes, half free 3-8-digit strings with touching neighbours. Characters/s is the figure to set
beside single digits/s: a field costs its segmentation and one classification per candidate.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.pipeline import Stack, end_to_end
from bench.synth import STYLES, DigitPool, write_fields
from producer.client import Client

__all__ = ["beside_single_digits", "fields_end_to_end", "write_field_set"]


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


def beside_single_digits(
    s: Stack,
    fields: Path,
    field_truth: dict[str, str],
    digits: Path,
    digit_truth: dict[str, int],
    rounds: int,
    first_single: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fields end to end in ``rounds`` pairs with single digits through the same stack, the order
    alternating from pair to pair: the first run of a pair ran slower, A/A included, and single
    digits alone spread 733-1,311 images/s between runs. The goal's figures are the pairs'
    medians; the first pair's field run gives the accuracy. ``first_single``: a single-digit run
    just made (the e2e part's), taken as the first pair's."""
    pairs: list[dict[str, float]] = []
    first: dict[str, Any] = {}
    for i in range(rounds):
        runs: dict[str, dict[str, Any]] = {}
        if i == 0 and first_single is not None:
            runs["single"] = first_single
        for what in ("fields", "single") if i % 2 else ("single", "fields"):
            if what not in runs:
                runs[what] = (
                    fields_end_to_end(s, fields, field_truth)
                    if what == "fields"
                    else end_to_end(s, digits, digit_truth)
                )
        first = first or runs["fields"]
        chars, single = runs["fields"]["chars_per_second"], runs["single"]["images_per_second"]
        pairs.append({"chars_per_second": chars, "single_digits_per_second": single, "ratio": chars / single})
    median = {k: float(statistics.median(p[k] for p in pairs)) for k in pairs[0]}
    return first | {
        "pairs": pairs,
        "chars_per_second": median["chars_per_second"],
        "single_digits_per_second": median["single_digits_per_second"],
        "chars_vs_single": median["ratio"],
    }
