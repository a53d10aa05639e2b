"""`python -m bench.priority`: latency of single high-priority images under a saturating bulk load.

    python -m bench.priority                 # the registry's current model at INKQ_REDIS_URL
    python -m bench.priority --untrained     # an untrained network of the same architecture
    python -m bench.priority --quick         # eager, small sizes: a smoke run

One worker (the defaults, or ``--worker-setting name=value``) in a private Redis. Bulk jobs at low
priority keep the queue full; while they run, single images are submitted one at a time, at high
priority, then one, for contrast, at the bulk's own priority (what one FIFO queue gave before
priorities: it waits for the backlog). Each latency is from the start of `submit` to the job's
completion; a high sample counts only if the bulk was still running when it finished. The bulk's
own throughput meanwhile shows what low priority still gets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bench import common
from bench.pipeline import Stack, percentiles, stack
from bench.synth import load_mnist, write_digits
from config.settings import load_settings
from producer.client import Client
from storage import broker
from storage.priority import Priority

__all__ = ["main", "measure"]

# Messages waiting, beyond those the worker holds, before the measurement starts.
SATURATED = 32
RESULTS = Path(__file__).resolve().parent / "results" / "priority.json"


def singles(
    s: Stack,
    file: str,
    priority: Priority,
    count: int,
    gap_s: float,
    busy: threading.Event,
    timings: list[dict[str, float]],
    *,
    strict: bool = True,
) -> list[float]:
    """Milliseconds from submit to completion of ``count`` single images submitted while ``busy``
    is set; with ``strict``, only those that also finished before the bulk drained."""
    client = Client(s.settings(), priority)
    latencies = []
    timings.clear()
    for _ in range(count):
        if not busy.is_set():
            break
        start = time.perf_counter()
        job = client.submit([file]).job
        client.wait(job, timeout=1200)
        if busy.is_set() or not strict:
            latencies.append((time.perf_counter() - start) * 1000)
            timings.append(client.results(job)[0]["timings"])
        time.sleep(gap_s)  # one image at a time, as a person submits them
    return latencies


def measure(s: Stack, bulk: Path, copies: int, file: str, count: int, worker: dict[str, str]) -> dict[str, Any]:
    with s.worker("bench-priority", **worker):
        client = Client(s.settings(), Priority.LOW)
        client.submit([file])  # first-use costs out of the measurement
        busy = threading.Event()
        jobs: list[str] = []
        # The bulk comes from other processes, as it would: `producer submit --priority low`.
        feeder = threading.Thread(target=_feed, args=(s, bulk, copies, jobs), daemon=True)
        feeder.start()
        # Saturated: more messages queued than the worker holds.
        wait_until(lambda: _queued(client) >= SATURATED, 600)
        busy.set()
        watcher = threading.Thread(target=_watch, args=(client, busy, feeder), daemon=True)
        watcher.start()
        start = time.perf_counter()
        # Alongside, one image at the bulk's priority: it waits behind the backlog, as every image
        # did in one FIFO queue; one sample shows it.
        fifo: list[float] = []
        contrast = threading.Thread(
            target=lambda: fifo.extend(singles(s, file, Priority.LOW, 1, 0.0, busy, [], strict=False))
        )
        contrast.start()
        stages: list[dict[str, float]] = []
        high = singles(s, file, Priority.HIGH, count, 0.2, busy, stages)
        elapsed = time.perf_counter() - start
        feeder.join(1200)
        done_meanwhile = sum(client.status(j).done for j in jobs)  # a little after: an upper bound
        contrast.join(1200)
        for job in jobs:
            client.wait(job, timeout=1200)
        busy.clear()
    # batch_wait_ms is the wait of the oldest image in the batch, not this one's: left out.
    breakdown = {k: percentiles([t[k] for t in stages])["p50"] for k in ("queue_ms", "preprocess_ms", "model_ms")}
    return {
        "worker": worker,
        "bulk_images": copies * len(list(bulk.iterdir())),
        "high_ms": percentiles(high),
        "same_priority_as_bulk_ms": percentiles(fifo),
        # Where a high image's time went (the medians of its result's timings, milliseconds).
        "high_stages_p50_ms": breakdown if stages else {},
        "bulk_images_per_s_meanwhile": done_meanwhile / elapsed,
        "high_samples_ms": [round(v, 1) for v in high],
    }


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the bulk load never reached the queue")
        time.sleep(0.05)


def _feed(s: Stack, bulk: Path, copies: int, jobs: list[str]) -> None:
    env = s.env | s.overrides
    for _ in range(copies):
        command = [sys.executable, "-m", "producer.cli", "submit", "--priority", "low", "--json", str(bulk)]
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, check=True)
        jobs.append(json.loads(run.stdout.splitlines()[-1])["job"])


def _queued(client: Client) -> int:
    return broker.depth(client.redis, client.keys, client.settings.queue)["queued"]


def _outstanding(client: Client) -> int:
    """Messages queued or being worked on."""
    depth = broker.depth(client.redis, client.keys, client.settings.queue)
    return depth["queued"] + depth["unacked"]


def _watch(client: Client, busy: threading.Event, feeder: threading.Thread) -> None:
    """The bulk saturates the worker while messages are queued or in flight, or more are coming."""
    while busy.is_set():
        if not feeder.is_alive() and _outstanding(client) == 0:
            busy.clear()
        time.sleep(0.05)


@click.command()
@click.option("--quick", is_flag=True, help="Eager, small sizes: a smoke run.")
@click.option("--untrained", is_flag=True, help="Serve an untrained network of the same architecture.")
@click.option("--images", type=click.IntRange(min=10), default=10_000, show_default=True, help="Bulk files.")
@click.option("--copies", type=click.IntRange(min=1), default=3, show_default=True, help="Bulk jobs of them.")
@click.option("--count", type=click.IntRange(min=1), default=30, show_default=True, help="High singles.")
@click.option("--worker-setting", "worker_settings", multiple=True, help="name=value for the worker (repeatable).")
@click.option("--data-root", envvar="INKQ_DATA_ROOT", show_envvar=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS, show_default=True)
def main(
    quick: bool,
    untrained: bool,
    images: int,
    copies: int,
    count: int,
    worker_settings: tuple[str, ...],
    data_root: str | None,
    out: Path,
) -> None:
    """Latency of single high-priority images while low-priority bulk jobs saturate a worker."""
    settings = load_settings().replace(data_root=data_root)
    info, weights = common.untrained_model() if untrained else common.current_model(settings)
    worker = dict(w.split("=", 1) for w in worker_settings)
    overrides = {"compile": "false", "buckets": "1,8,32,128"} if quick else {}
    if quick:
        images, copies, count = min(images, 2000), 1, min(count, 10)
    test_images, test_labels = load_mnist(settings.path("data_root"), train=False)
    with tempfile.TemporaryDirectory(prefix="inkq-priority-") as tmp, stack(info, weights, Path(tmp), **overrides) as s:
        truth = write_digits(Path(tmp) / "bulk", test_images[:images], test_labels[:images])
        result = measure(s, Path(tmp) / "bulk", copies, sorted(truth)[0], count, worker)
    result |= {"machine": common.machine(), "quick": quick, "untrained": untrained, "overrides": overrides}
    h, f = result["high_ms"], result["same_priority_as_bulk_ms"]
    click.echo(
        f"high-priority single image under {result['bulk_images']:,} bulk images: p50 {h.get('p50', 0):.0f} ms, "
        f"p95 {h.get('p95', 0):.0f} ms, max {max(result['high_samples_ms'] or [0]):.0f} ms (n={h.get('n', 0)}); "
        f"at the bulk's priority: p50 {f.get('p50', 0):.0f} ms (n={f.get('n', 0)}); "
        f"bulk meanwhile {result['bulk_images_per_s_meanwhile']:.0f} images/s; "
        f"high stages (p50 ms): {result['high_stages_p50_ms']}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
