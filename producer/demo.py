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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image, ImageFilter

from config.errors import DatasetUnavailableError, InkqError
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


def write_digits(folder: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """MNIST digits as plain PNG scans (dark ink on white), as tests and benchmarks use them;
    returns path -> true label."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        path = folder / f"{i:05d}.png"
        Image.fromarray(255 - img).save(path)
        truth[str(path)] = int(label)
    return truth


def outlined(digit: np.ndarray) -> np.ndarray:
    """A handwriting style MNIST never showed: hollow strokes, drawn as their outline."""
    ring = np.asarray(Image.fromarray(digit).filter(ImageFilter.MaxFilter(5)), np.int16) - digit.astype(np.int16)
    return np.clip(ring * 2, 0, 255).astype(np.uint8)


@contextlib.contextmanager
def pipeline(settings: Settings, epochs: int) -> Iterator[tuple[dict[str, str], Registry, str]]:
    """Redis (private unless INKQ_REDIS_URL is set), a current model, one ready worker:
    the environment to reach them, the registry, and the worker's name."""
    data_root = settings.path("data_root")
    with contextlib.ExitStack() as stack:
        url = os.environ.get("INKQ_REDIS_URL")
        if not url:
            url = stack.enter_context(local_redis(STATE_DIR))
            say(f"started a private Redis at {url} (its data is kept in {STATE_DIR}/)")
        env = os.environ | {"INKQ_REDIS_URL": url, "INKQ_DATA_ROOT": str(data_root)}
        registry = Registry(connect(url), Keys(settings.key_prefix))
        if registry.current() is None:
            say(f"no model in the registry yet: training a short base model ({epochs} epochs) from {data_root}")
            run([*script("trainer"), "train", "--epochs", str(epochs), "--json"], env, stdout=subprocess.DEVNULL)
        info = registry.info()
        say(f"model {info.version}: test accuracy {info.metrics.get('test_accuracy', float('nan')):.4%}")
        say("starting a worker (`celery -A worker worker`): loading, compiling and warming the model")
        started = time.monotonic()
        name = f"demo-{os.getpid()}@{socket.gethostname()}"
        stack.callback(stop, start_worker(env, name, STATE_DIR / "worker.log"))
        say(f"worker ready in {time.monotonic() - started:.1f}s")
        yield env, registry, name


def recognise(env: dict[str, str], folder: Path) -> tuple[list[dict[str, Any]], float]:
    """`producer submit` a folder and `producer results --wait`: the rows and the seconds taken."""
    start = time.perf_counter()
    out = run([*script("producer"), "submit", str(folder), "--json"], env, capture_output=True).stdout
    job = json.loads(out.strip().splitlines()[-1])["job"]
    lines = run(
        [*script("producer"), "results", job, "--wait", "--timeout", "1800", "--format", "jsonl"],
        env,
        capture_output=True,
    ).stdout.splitlines()
    return [json.loads(line) for line in lines], time.perf_counter() - start


def accuracy(rows: list[dict[str, Any]], truth: dict[str, int]) -> float:
    return sum(1 for r in rows if r["label"] == truth.get(r["item"])) / max(len(rows), 1)


def demo(settings: Settings, *, count: int, epochs: int, keep: bool) -> dict[str, Any]:
    with pipeline(settings, epochs) as (env, registry, _), tempfile.TemporaryDirectory(prefix="inkq-demo-") as tmp:
        folder = Path(tmp) / "scans"
        truth = write_scans(folder, settings.path("data_root"), count, seed=0)
        say(f"wrote {len(truth)} scan-like digits to {folder}; submitting them")
        results, seconds = recognise(env, folder)
        if keep:
            shutil.copytree(folder, STATE_DIR / "scans", dirs_exist_ok=True)
        batches = sorted({r["batch"]["id"]: r["batch"]["size"] for r in results if r["batch"]}.values())
        return {
            "items": len(results),
            "accuracy": accuracy(results, truth),
            "errors": sum(1 for r in results if r["error"]),
            "seconds": seconds,
            "images_per_second": len(results) / seconds,
            "model_version": registry.current(),
            "batches": len(batches),
            "largest_batch": batches[-1] if batches else 0,
        }


def finetune_demo(settings: Settings, *, labels: int, test: int, epochs: int) -> dict[str, Any]:
    """Label a few hundred digits of a new style, retrain, and watch the running worker switch."""
    root = settings.path("data_root")
    raw = root / "MNIST" / "raw"
    train_images, train_labels = read_idx(raw / "train-images-idx3-ubyte"), read_idx(raw / "train-labels-idx1-ubyte")
    test_images, test_labels = read_idx(raw / "t10k-images-idx3-ubyte"), read_idx(raw / "t10k-labels-idx1-ubyte")
    rng = np.random.default_rng(1)
    with pipeline(settings, epochs) as (env, registry, worker), tempfile.TemporaryDirectory(prefix="inkq-ft-") as tmp:
        work = Path(tmp)
        before = registry.current()
        styled: dict[str, int] = {}
        for i in rng.choice(len(test_images), size=min(test, len(test_images)), replace=False):
            path = work / "style-test" / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - outlined(test_images[i])).save(path)
            styled[str(path)] = int(test_labels[i])
        rows, _ = recognise(env, work / "style-test")
        style_before = accuracy(rows, styled)
        say(f"{before} reads {len(styled)} outlined test digits with accuracy {style_before:.2%}")

        for n, i in enumerate(rng.choice(len(train_images), size=labels, replace=False)):
            path = work / "labels" / str(int(train_labels[i])) / f"{n:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - outlined(train_images[i])).save(path)
        run([*script("producer"), "label", str(work / "labels")], env, stdout=subprocess.DEVNULL)
        say(f"labelled {labels} outlined training digits; running `trainer retrain`")
        summary = json.loads(
            run([*script("trainer"), "retrain", "--json"], env, capture_output=True).stdout.strip().splitlines()[-1]
        )
        say(f"{summary['version']}: {'promoted' if summary['promoted'] else 'rejected'} ({summary['reason']})")
        after = registry.current()
        if summary["promoted"]:
            deadline = time.monotonic() + 600
            while json.loads(registry.redis.get(registry.keys.worker(worker)) or b"{}").get("version") != after:
                if time.monotonic() > deadline:
                    raise InkqError(f"the worker did not switch to {after} in 10 minutes")
                time.sleep(0.2)  # the worker compiles and warms the new version meanwhile
            say(f"the running worker switched to {after}")
        rows, _ = recognise(env, work / "style-test")
        style_after = accuracy(rows, styled)
        served = sorted({r["model_version"] for r in rows})
        mnist = {}
        for version in dict.fromkeys([before, after]):
            scored = (
                run(
                    [*script("trainer"), "evaluate", "--version", str(version), "--no-compile", "--json"],
                    env,
                    capture_output=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            mnist[str(version)] = json.loads(scored)["accuracy"]
        return {
            "before": before,
            "after": after,
            "promoted": summary["promoted"],
            "reason": summary["reason"],
            "labels": labels,
            "style_test_n": len(styled),
            "served_by": served,
            "style_accuracy_before": style_before,
            "style_accuracy_after": style_after,
            "mnist_test_accuracy_before": mnist[str(before)],
            "mnist_test_accuracy_after": mnist[str(after)],
            "mnist_drop_points": 100 * (mnist[str(before)] - mnist[str(after)]),
        }
