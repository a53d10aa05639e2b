"""`python -m bench.gil`: what Python threads beside the model cost a batch, by GIL switch interval.

A worker's model shares its process with the Celery consumer and the message threads. The
compiled model calls tens of kernels, and each one gives the GIL up and must win it back; a
thread that holds the GIL keeps it until it blocks or the interpreter's switch interval
(``sys.setswitchinterval``, 5 ms by default) forces a handover. So a batch that takes 6 ms
alone can take tens of milliseconds beside busy threads. This measures one compiled batch,
alone and beside two kinds of neighbour, at several switch intervals, side by side in one run:

    python -m bench.gil                        # batch 8, bf16 where the CPU has it
    python -m bench.gil --batch 32 --json out.json
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import redis
import torch

from bench import common
from producer.local import local_redis
from recognizer import artifact, network
from recognizer.engine import Engine

__all__ = ["main"]

INTERVALS_MS = (5.0, 1.0, 0.5, 0.2)  # 5 ms is CPython's default


def spin(stop: threading.Event) -> None:
    """Pure Python that never blocks: the worst neighbour."""
    n = 0
    while not stop.is_set():
        n += 1


def round_trips(url: str) -> Callable[[threading.Event], None]:
    """Redis round trips with redis-py's parsing in between: what a message thread does."""

    def run(stop: threading.Event) -> None:
        client = redis.Redis.from_url(url)
        while not stop.is_set():
            client.hgetall("inkq:bench:gil")  # an empty hash: the cost is the round trip and parsing

    return run


def timed_batches(engine: Engine, batch: torch.Tensor, seconds: float) -> list[float]:
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        engine.logits(batch)
        times.append((time.perf_counter() - start) * 1000)
    return times


def beside(
    neighbour: Callable[[threading.Event], None] | None, count: int, run: Callable[[], list[float]]
) -> list[float]:
    stop = threading.Event()
    threads = [threading.Thread(target=neighbour, args=(stop,), daemon=True) for _ in range(count if neighbour else 0)]
    for t in threads:
        t.start()
    try:
        return run()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)


def summary(times: list[float]) -> dict[str, float]:
    # One interpolation for both quantiles, so p90 >= p50 however few batches a cell ran (a cell
    # beside a spinning thread can run two); a median beside a nearest-rank p90 broke that.
    p50, p90 = np.percentile(times, [50, 90])
    return {"p50": float(p50), "p90": float(p90), "batches": len(times)}


@click.command()
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True)
@click.option("--seconds", type=click.FloatRange(min=0.2), default=3.0, show_default=True, help="Per cell.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(batch: int, precision: str, seconds: float, json_path: Path | None) -> None:
    """One compiled batch's milliseconds alone and beside busy threads, by switch interval."""
    info, weights = common.untrained_model()  # speed does not depend on the weights
    model = artifact.load_into(network.build(info.arch), weights)
    engine = Engine(model, precision=precision, buckets=(batch,), compile=True)
    engine.warm()
    x = torch.rand(batch, 1, 28, 28)
    default = sys.getswitchinterval()
    table: dict[str, dict[str, Any]] = {}
    with local_redis() as url:
        neighbours = {"alone": (None, 0), "2 redis threads": (round_trips(url), 2), "1 spinning thread": (spin, 1)}
        try:
            for ms in INTERVALS_MS:
                sys.setswitchinterval(ms / 1000)
                row = table.setdefault(f"{ms:g} ms", {})
                for name, (neighbour, count) in neighbours.items():
                    row[name] = summary(beside(neighbour, count, lambda: timed_batches(engine, x, seconds)))
                    click.echo(f"switch {ms:g} ms, {name}: {row[name]}")
        finally:
            sys.setswitchinterval(default)
    result = {"machine": common.machine(), "engine": engine.describe(), "batch": batch, "ms_per_batch": table}
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"{engine.describe()}, batch {batch}: p50 / p90 ms per batch")
    for interval, row in table.items():
        cells = "  ".join(f"{name}: {v['p50']:.1f} / {v['p90']:.1f}" for name, v in row.items())
        click.echo(f"switch {interval:>7}  {cells}")


if __name__ == "__main__":
    main()
