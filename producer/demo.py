"""`producer demo`: the whole pipeline on one machine, end to end, started and stopped here.

Starts a private Redis (unless INKQ_REDIS_URL is set), gets a model (the registry's current
one, else trains a short base model), starts a worker, writes MNIST test digits as scan-like
image files, submits them with `producer submit`, waits for the results and prints accuracy
and throughput. Everything it starts, it stops. No torch here: the heavy parts are the real
`trainer` and `celery -A worker worker` commands, run as subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

from config.errors import DatasetUnavailableError
from config.settings import Settings
from producer.local import local_redis, script, start_worker, stop
from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry

STATE_DIR = Path(".inkq")


def say(message: str) -> None:
    click.echo(f"[demo] {message}", err=True)


def read_idx(path: Path) -> np.ndarray:
    """An MNIST IDX file (optionally .gz) as a numpy array, without torch."""
    import gzip

    candidates = [path, path.with_name(path.name + ".gz")]
    for candidate in candidates:
        if candidate.exists():
            raw = gzip.decompress(candidate.read_bytes()) if candidate.suffix == ".gz" else candidate.read_bytes()
            dims = raw[3]
            shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise DatasetUnavailableError(f"MNIST file {path} not found; pass --data-root (INKQ_DATA_ROOT)")


def write_scans(folder: Path, data_root: Path, count: int, seed: int) -> dict[str, int]:
    """MNIST test digits as 'scans': dark ink on off-white paper, somewhere on a small page."""
    raw = data_root / "MNIST" / "raw"
    images, labels = read_idx(raw / "t10k-images-idx3-ubyte"), read_idx(raw / "t10k-labels-idx1-ubyte")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for n, i in enumerate(rng.choice(len(images), size=min(count, len(images)), replace=False)):
        scale = int(rng.integers(2, 5))
        digit = np.asarray(Image.fromarray(images[i]).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR))
        page = np.full((28 * scale + 60, 28 * scale + 80), 240.0) + rng.normal(0, 4, (28 * scale + 60, 28 * scale + 80))
        y, x = int(rng.integers(0, 60)), int(rng.integers(0, 80))
        page[y : y + 28 * scale, x : x + 28 * scale] -= digit.astype(np.float64) * 0.8
        path = folder / f"scan-{n:04d}.png"
        Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).save(path)
        truth[str(path)] = int(labels[i])
    return truth


def run(command: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, text=True, check=True, **kwargs)


def demo(settings: Settings, *, count: int, epochs: int, keep: bool) -> dict[str, Any]:
    data_root = settings.path("data_root")
    with contextlib.ExitStack() as stack:
        url = os.environ.get("INKQ_REDIS_URL")
        if not url:
            url = stack.enter_context(local_redis(STATE_DIR))
            say(f"started a private Redis at {url} (its data is kept in {STATE_DIR}/)")
        env = os.environ | {"INKQ_REDIS_URL": url, "INKQ_DATA_ROOT": str(data_root)}
        redis_client = connect(url)
        keys = Keys(settings.key_prefix)
        registry = Registry(redis_client, keys)
        if registry.current() is None:
            say(f"no model in the registry yet: training a short base model ({epochs} epochs) from {data_root}")
            run([*script("trainer"), "train", "--epochs", str(epochs), "--json"], env, stdout=subprocess.DEVNULL)
        info = registry.info()
        say(f"model {info.version}: test accuracy {info.metrics.get('test_accuracy', float('nan')):.4%}")

        say("starting a worker (`celery -A worker worker`): loading, compiling and warming the model")
        started = time.monotonic()
        name = f"demo-{os.getpid()}@{socket.gethostname()}"
        worker = start_worker(env, name, STATE_DIR / "worker.log")
        stack.callback(stop, worker)
        say(f"worker ready in {time.monotonic() - started:.1f}s")

        folder = Path(tempfile.mkdtemp(prefix="inkq-demo-"))
        if not keep:
            stack.callback(shutil.rmtree, folder, True)
        truth = write_scans(folder, data_root, count, seed=0)
        say(f"wrote {len(truth)} scan-like digits to {folder}")

        start = time.perf_counter()
        submitted = json.loads(
            run([*script("producer"), "submit", str(folder), "--json"], env, capture_output=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        lines = run(
            [*script("producer"), "results", submitted["job"], "--wait", "--timeout", "600", "--format", "jsonl"],
            env,
            capture_output=True,
        ).stdout.splitlines()
        seconds = time.perf_counter() - start
        results = [json.loads(line) for line in lines]
        correct = sum(1 for r in results if r["label"] == truth.get(r["item"]))
        errors = [r for r in results if r["error"]]
        batches = sorted({r["batch"]["id"]: r["batch"]["size"] for r in results if r["batch"]}.values())
        return {
            "job": submitted["job"],
            "items": len(results),
            "accuracy": correct / len(results) if results else 0.0,
            "errors": len(errors),
            "seconds": seconds,
            "images_per_second": len(results) / seconds,
            "model_version": info.version,
            "batches": len(batches),
            "largest_batch": batches[-1] if batches else 0,
        }
    raise AssertionError("unreachable")
