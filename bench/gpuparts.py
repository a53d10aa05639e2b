"""The GPU run's parts that go through Redis and real worker processes (`python -m bench.gpu`
runs them after the model part), in this order, on one private Redis and one set of files:

1. ``e2e``: one worker end to end (files -> `Client.submit` -> worker -> results), once per
   preprocessing pool size; the first worker's start, with the model part's compile cache, is
   the warm start;
2. ``fields``: comb and free fields of MNIST test digits through one worker, characters/s beside
   the single digits/s of part 1;
3. ``shared``: several workers on the one device, the host's cores divided among their pools
   (what README says to run on a GPU host), images/s beside part 1's one worker;
4. ``cold``: a worker start with an empty compile cache.

Parts 2-4 run only while the budget has room for them, and say so when skipped; a part that
fails is recorded and costs the others nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import fieldpipe, pipeline
from bench.synth import load_mnist, write_digits
from producer.client import Client
from storage.registry import VersionInfo

__all__ = ["Bench", "attempt", "prepared", "run_parts"]

log = logging.getLogger("bench.gpu")

# What the end-to-end workers serve: the buckets the model part compiled (so a start finds them
# in the compile cache) up to a batch the dynamic batcher fills.
E2E_BUCKETS = {"cuda": "1,8,64,512", "cpu": "1,8,64"}
# Preprocessing pools part 1 compares (INKQ_PREPROCESS_WORKERS; -1 is the default, every core
# but two on a GPU host); the last is the one reported as "e2e".
POOLS = {"cuda": ("0", "-1"), "cpu": ("0", "2")}
E2E_SUMMARY = ("images_per_second", "seconds", "accuracy", "stage_ms_per_image", "worker_ready_seconds")
FIELDS = {"quick": 20, "full": 1000}  # field images for part 2: 1,000 take about 10 s to write
SHARED_WORKERS = 2
# Seconds of budget each later part needs (worker starts of about 30 s on a GPU each, then the run).
NEEDS_S = {"fields": 90, "shared": 110, "cold": 100}


@dataclass
class Bench:
    """What every part shares: the stack, the files and the workers' settings."""

    stack: pipeline.Stack
    tmp: Path
    images: np.ndarray
    labels: np.ndarray
    truth: dict[str, int]
    worker: dict[str, str]
    cache: Path
    device: torch.device
    quick: bool


@contextlib.contextmanager
def prepared(
    info: VersionInfo, weights: bytes, device: torch.device, data_root: Path, cache: Path, quick: bool
) -> Iterator[Bench]:
    images, labels = load_mnist(data_root, train=False)
    n = 200 if quick else len(images)
    buckets = "1,8" if quick else E2E_BUCKETS[device.type]
    worker = {"device": device.type, "buckets": buckets, "max_batch": buckets.rsplit(",", 1)[-1]}
    worker |= {"compile": "false"} if quick and device.type == "cpu" else {"precision": "bf16"}
    worker |= {"compile_cache_dir": str(cache)}
    with tempfile.TemporaryDirectory(prefix="inkq-gpu-") as tmp, pipeline.stack(info, weights, Path(tmp)) as s:
        truth = write_digits(Path(tmp) / "digits", images[:n], labels[:n])
        yield Bench(s, Path(tmp), images, labels, truth, worker, cache, device, quick)


def e2e(b: Bench, out: dict[str, Any]) -> dict[str, Any]:
    pools = POOLS[b.device.type]
    runs = {
        pool: pipeline.end_to_end(b.stack, b.tmp / "digits", b.truth, preprocess_workers=pool, **b.worker)
        for pool in pools
    }
    return {
        "e2e_worker_settings": b.worker,
        "e2e": runs[pools[-1]],
        "e2e_by_preprocess_workers": {
            str(run["preprocess_workers"]): {k: run[k] for k in E2E_SUMMARY} for run in runs.values()
        },
        "worker_start_s": {"warm": runs[pools[0]]["worker_ready_seconds"]},
    }


def fields(b: Bench, out: dict[str, Any]) -> dict[str, Any]:
    texts = fieldpipe.write_field_set(b.tmp / "fields", b.images, b.labels, FIELDS["quick" if b.quick else "full"])
    run = fieldpipe.fields_end_to_end(b.stack, b.tmp / "fields", texts, **b.worker)
    run["chars_vs_single"] = run["chars_per_second"] / out["e2e"]["images_per_second"]
    return {"fields_e2e": run}


def shared(b: Bench, out: dict[str, Any]) -> dict[str, Any]:
    """SHARED_WORKERS workers on one device, each with its share of the cores but two."""
    pool = max(1, ((os.cpu_count() or 2) - 2) // SHARED_WORKERS) if b.device.type == "cuda" else 0
    with contextlib.ExitStack() as workers:
        started = time.perf_counter()
        for i in range(SHARED_WORKERS):
            workers.enter_context(b.stack.worker(f"bench-shared{i}", preprocess_workers=str(pool), **b.worker))
        ready = time.perf_counter() - started
        # Quick runs are small: chunks of 8 make enough messages for both workers to take some.
        client = Client(b.stack.settings(**({"chunk_size": "8"} if b.quick else {})))
        start = time.perf_counter()
        status = client.wait(client.submit([str(b.tmp / "digits")]).job, timeout=1800)
        seconds = time.perf_counter() - start
        assert status.complete, f"shared-device run did not complete: {status}"
        rows = client.results(status.job)
    run = pipeline.tally(rows, b.truth, seconds)
    run |= {
        "workers": SHARED_WORKERS,
        "preprocess_workers_each": pool,
        "vs_one_worker": run["images_per_second"] / out["e2e"]["images_per_second"],
        "workers_that_served": len({r["worker"] for r in rows if r.get("worker")}),
        "start_seconds_all": ready,
    }
    return {"shared_device": run}


def cold(b: Bench, out: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    settings = b.worker | {"compile_cache_dir": str(b.tmp / "cold-cache")}
    with b.stack.worker("gpu-start-cold", **settings):
        return {"worker_start_s": out.get("worker_start_s", {}) | {"cold": time.perf_counter() - start}}


PARTS: tuple[tuple[str, Callable[[Bench, dict[str, Any]], dict[str, Any]]], ...] = (
    ("e2e", e2e),
    ("fields", fields),
    ("shared", shared),
    ("cold", cold),
)


def attempt(result: dict[str, Any], name: str, part: Callable[[], dict[str, Any]]) -> None:
    """``part``'s figures into ``result``, or why it failed: one part failing must not cost the others'."""
    try:
        result |= part()
    except Exception as exc:
        log.exception("part %s failed", name)
        result.setdefault("failed_parts", {})[name] = f"{type(exc).__name__}: {exc}"[:2000]


def run_parts(b: Bench, result: dict[str, Any], left: Callable[[], float], write: Callable[[], None]) -> None:
    """Every part in order into ``result``, written after each; later parts while the budget lasts."""
    for name, part in PARTS:
        needs = NEEDS_S.get(name, 0)
        if not b.quick and left() < needs:
            result.setdefault("skipped_parts", {})[name] = f"{left():.0f}s of the budget left, it needs about {needs}s"
            continue
        attempt(result, name, lambda: part(b, result))  # noqa: B023 - called at once, within the loop
        write()
