"""End-to-end benchmarks on a private Redis with real worker processes: throughput against the
naive Celery baseline, latency under light and heavy load, worker start, retrain cost."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from redis import Redis

from bench import naive
from bench.synth import outlined, start_worker, stop, write_digits
from config.settings import Settings, load_settings
from producer.client import Client
from producer.local import local_redis, script
from storage import workers
from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry, VersionInfo
from storage.utils import as_text

log = logging.getLogger(__name__)


@dataclass
class Stack:
    """A private Redis holding a copy of the model under test, and the environment to reach it."""

    url: str
    workdir: Path
    env: dict[str, str]
    overrides: dict[str, str] = field(default_factory=dict)

    def settings(self, **extra: str) -> Settings:
        return load_settings(self.env | self.overrides | {f"INKQ_{k.upper()}": v for k, v in extra.items()})

    @contextlib.contextmanager
    def worker(self, name: str, **extra: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
        node = f"{name}@{socket.gethostname()}"
        env = self.env | self.overrides | {f"INKQ_{k.upper()}": v for k, v in extra.items()}
        process = start_worker(env, node, self.workdir / f"{name}.log", loglevel="warning")
        try:
            yield process, node
        finally:
            stop(process)


@contextlib.contextmanager
def stack(info: VersionInfo, weights: bytes, workdir: Path, **overrides: str) -> Iterator[Stack]:
    with local_redis() as url:
        # A fresh registry: the copy has learned none of this Redis's labels.
        fresh = {"version": "", "sha256": "", "labels_upto": 0, "pruned": False}
        Registry(connect(url), Keys()).publish(weights, VersionInfo(**{**vars(info), **fresh}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("INKQ_")} | {
            "INKQ_REDIS_URL": url,
            "INKQ_LOG_LEVEL": "warning",
        }
        if "INKQ_COMPILE_CACHE_DIR" in os.environ:
            env["INKQ_COMPILE_CACHE_DIR"] = os.environ["INKQ_COMPILE_CACHE_DIR"]
        yield Stack(url, workdir, env, {f"INKQ_{k.upper()}": v for k, v in overrides.items()})


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = np.asarray(values)
    return {
        "p50": float(np.percentile(ordered, 50)),
        "p95": float(np.percentile(ordered, 95)),
        "p99": float(np.percentile(ordered, 99)),
        "mean": float(ordered.mean()),
        "n": len(values),
    }


def end_to_end(s: Stack, folder: Path, truth: dict[str, int], **worker: str) -> dict[str, Any]:
    """Files on disk -> `producer submit` -> workers -> every result in the store."""
    launched = time.perf_counter()
    with s.worker("bench-e2e", **worker) as (_, node):
        ready = time.perf_counter() - launched
        client = Client(s.settings())
        start = time.perf_counter()
        report = client.submit([str(folder)])
        submitted = time.perf_counter() - start
        status = client.wait(report.job, timeout=1800)
        seconds = time.perf_counter() - start
        assert status.complete, f"end-to-end run did not complete: {status}"
        rows = client.results(report.job)
        stats = {as_text(k): float(v) for k, v in client.redis.hgetall(Keys().worker_stats(node)).items()}
        state = workers.read(client.redis, Keys(), node)
        engine = state.engine if state else None
    n = len(rows)
    # Each batch's model time counted once (many messages may wait on the same batch).
    batches = {r["batch"]["id"]: r["timings"]["model_ms"] for r in rows if r["batch"]}
    per_item = {
        "read_hash_store_enqueue": submitted * 1000 / n,
        "fetch": stats.get("fetch_ms", 0) / n,
        "decode_preprocess": sum(r["timings"].get("preprocess_ms", 0) for r in rows) / n,
        "model": sum(batches.values()) / n,
        "result_write": stats.get("write_ms", 0) / n,
    }
    total = sum(per_item.values())
    sizes = Counter(r["batch"]["size"] for r in rows if r["batch"])
    return tally(rows, truth, seconds) | {
        "submit_seconds": submitted,
        "stage_ms_per_image": per_item,
        "stage_share": {k: v / total for k, v in per_item.items()},
        "queue_wait_ms_mean": stats.get("queue_ms", 0) / max(stats.get("messages", 1), 1),
        "batch_sizes": dict(sorted(sizes.items())),
        "worker_ready_seconds": ready,
        "engine": engine,
        "preprocess_workers": state.preprocess_workers if state else None,
    }


def tally(rows: list[dict[str, Any]], truth: dict[str, int], seconds: float) -> dict[str, Any]:
    """What every digit run reports of its results: how many, how fast, how right, none lost."""
    n = len(rows)
    return {
        "images": n,
        "images_per_second": n / seconds,
        "seconds": seconds,
        "accuracy": sum(r["label"] == truth[r["item"]] for r in rows) / n,
        "errors": sum(1 for r in rows if r["error"]),
        "missing_or_duplicated": n != len({r["item"] for r in rows}) or n != len(truth),
    }


def naive_baseline(s: Stack, folder: Path, truth: dict[str, int], n: int) -> dict[str, Any]:
    """One Celery task per image, bytes in the message, eager model, no batching: same files."""
    files = sorted(truth)[:n]
    run = f"run{os.getpid()}"
    env_extra = ("--concurrency", str(os.cpu_count() or 1))
    node = f"bench-naive@{socket.gethostname()}"
    env = s.env | s.overrides
    process = start_worker(env, node, s.workdir / "naive.log", app="bench.naive", extra=env_extra)
    client = connect(s.url)
    try:
        sender = naive.make_app(s.url)
        start = time.perf_counter()
        for path in files:
            naive.send(sender, run, path, Path(path).read_bytes())
        done_key = naive.done_key(run)
        pause = threading.Event()
        while int(client.get(done_key) or 0) < len(files):
            if time.perf_counter() - start > 1800:
                raise TimeoutError("naive baseline did not finish")
            pause.wait(0.02)
        seconds = time.perf_counter() - start
        keys = [naive.result_key(run, p) for p in files]
        rows = [json.loads(v) for v in client.mget(keys) if v is not None]
    finally:
        stop(process)
    return {
        "images": len(rows),
        "images_per_second": len(rows) / seconds,
        "seconds": seconds,
        "accuracy": sum(r["label"] == truth[r["item"]] for r in rows) / max(len(rows), 1),
        "worker_processes": os.cpu_count(),
    }


def latency(s: Stack, files: list[str], *, rate: float, count: int, **worker: str) -> dict[str, Any]:
    """Single images submitted at a fixed rate; milliseconds from the start of `submit` to the
    result being readable: the ``finished`` time its last result's write stamps into the job
    (storage/write_results.lua writes both in one script). One thread submits on schedule; a
    collector reads the stamps of every outstanding job in one pipelined round trip five times
    a second, which costs little and delays nothing however long the backlog. Every result is
    read back at the end."""
    with s.worker("bench-latency", **worker) as (_, node):
        submitter, collector = Client(s.settings()), Client(s.settings())
        state = settled(collector.redis, collector.keys, node)
        submitter.submit(files[:1])  # first-use costs (connections, scripts) out of the measurement
        began: dict[str, float] = {}
        latencies: dict[str, float] = {}
        lock = threading.Lock()
        done_submitting = threading.Event()

        def collect() -> None:
            deadline = time.perf_counter() + count / rate + 120
            while time.perf_counter() < deadline:
                with lock:
                    watching = [job for job in began if job not in latencies]
                if not watching and done_submitting.is_set():
                    return
                pipe = collector.redis.pipeline(transaction=False)
                for job in watching:
                    pipe.hget(collector.keys.job(job), "finished")
                for job, stamp in zip(watching, pipe.execute(), strict=True):
                    if stamp is not None:
                        latencies[job] = (float(stamp) - began[job]) * 1000
                done_submitting.wait(0.2)

        thread = threading.Thread(target=collect)
        thread.start()
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # pacing the load generator at its fixed rate
            t0 = time.time()  # the wall clock the worker stamps `finished` with (same machine)
            job = submitter.submit([files[i % len(files)]]).job
            with lock:
                began[job] = t0
        achieved = count / (time.perf_counter() - start)
        done_submitting.set()
        thread.join(count / rate + 180)
    sizes: Counter[int] = Counter()
    for job in latencies:
        (row,) = collector.results(job)
        sizes[row["batch"]["size"] if row["batch"] else 0] += 1
    return percentiles(list(latencies.values())) | {
        "rate_per_s": rate,
        "achieved_rate_per_s": achieved,
        "missing": count - len(latencies),
        "engine": state.engine if state else None,
        "batch_sizes": dict(sorted(sizes.items())),
        "samples_ms": [round(v, 3) for v in latencies.values()],
    }


def settled(redis: Redis, keys: Keys, node: str, timeout_s: float = 600) -> workers.WorkerState | None:
    """The worker's state once its background work after the start is over (the AOT package
    build after a cold start, the compile beside the packages after a warm one), so that a
    measurement sees a worker in its steady state, not one sharing the cores with a compiler.
    Raises TimeoutError when the work is still going after ``timeout_s``."""
    state = workers.read(redis, keys, node)
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while state is not None and str(state.packages).startswith(("building", "compiling")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {node} still {state.packages} after {timeout_s:.0f}s")
        pause.wait(1.0)  # the heartbeat that reports the build comes every few seconds
        state = workers.read(redis, keys, node)
    return state


def worker_start(s: Stack, cache: Path, build_timeout_s: float = 1800) -> dict[str, Any]:
    """Seconds from `celery -A worker worker` to ready, and how each start got its model.

    cold: an empty compile cache (it compiles, then builds AOT packages in the background; the
    benchmark waits for them, ``package_build_s``); warm: the packages present; and, when they
    were built, warm_compile_only: the same cache with INKQ_AOT_PACKAGES=false (torch.compile).
    import_only (also only then): a process that only imports the worker's code (torch,
    torchvision, Celery), the floor under any start on this machine.
    """
    shutil.rmtree(cache, ignore_errors=True)
    redis, keys = connect(s.url), Keys()
    out: dict[str, Any] = {}
    start = time.perf_counter()
    with s.worker("bench-start-cold", compile_cache_dir=str(cache)) as (_, node):
        out["cold"] = time.perf_counter() - start
        state = workers.read(redis, keys, node)
        out["cold_engine"] = state.engine_source if state else None
        out["cold_description"] = state.engine if state else None
        ready = time.perf_counter()
        state = settled(redis, keys, node, build_timeout_s)  # a build of about a minute per bucket
        out["packages"] = state.packages if state else None
        out["package_build_s"] = time.perf_counter() - ready
    runs: dict[str, dict[str, str]] = {"warm": {}}
    if str(out["packages"]).startswith("built"):  # not in a quick (eager) run
        runs["warm_compile_only"] = {"aot_packages": "false"}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import worker.app"], env=s.env, check=True, capture_output=True)
        out["import_only"] = time.perf_counter() - start
    for kind, extra in runs.items():
        start = time.perf_counter()
        with s.worker(f"bench-start-{kind.replace('_', '-')}", compile_cache_dir=str(cache), **extra) as (_, node):
            out[kind] = time.perf_counter() - start
            state = workers.read(redis, keys, node)
            out[f"{kind}_engine"] = state.engine_source if state else None
            out[f"{kind}_description"] = state.engine if state else None  # e.g. where the line reader came from
    return out


def retrain_cost(s: Stack, images: np.ndarray, labels: np.ndarray, data_root: Path, epochs: int) -> dict[str, Any]:
    """Wall time of `trainer retrain` for len(images) new labels plus replay."""
    folder = s.workdir / "labels"
    write_digits(folder, images, labels, style=outlined, by_label=True)
    env = s.env | {"INKQ_DATA_ROOT": str(data_root), "INKQ_RETRAIN_EPOCHS": str(epochs)}
    subprocess.run([*script("producer"), "label", str(folder)], env=env, check=True, capture_output=True)
    start = time.perf_counter()
    run = subprocess.run([*script("trainer"), "retrain", "--json"], env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    return {
        "seconds": seconds,
        "labels": len(images),
        "epochs": epochs,
        "promoted": summary["promoted"],
        "before": summary.get("before"),
        "after": summary.get("after"),
        "replay": summary.get("replay"),
        "phase_seconds": summary.get("phase_seconds"),
        "mix": summary.get("mix"),
    }


def median_of(values: list[float]) -> float:
    return float(statistics.median(values))
