"""`producer demo`: the whole pipeline on one machine, end to end, started and stopped here.

Starts a private Redis (unless INKQ_REDIS_URL is set), gets a model (the registry's current
one, else trains a short base model), starts a worker, writes MNIST test digits as scan-like
image files, submits them with `producer submit`, waits for the results and prints accuracy
and throughput; then a few hundred generated fields (comb-box ZIP codes, free numbers) with
`producer submit --field`, and the share read exactly. Everything it starts, it stops. No
torch here: the heavy parts are the real `trainer` and `celery -A worker worker` commands, run
as subprocesses.
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

from bench.synth import (
    STYLES,
    DigitPool,
    load_mnist,
    outlined,
    page_scans,
    start_worker,
    stop,
    write_digits,
    write_fields,
)
from config.errors import InkqError
from config.settings import Settings
from producer.local import local_redis, script
from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry

STATE_DIR = Path(".inkq")


def say(message: str) -> None:
    click.echo(f"[demo] {message}", err=True)


def run(command: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, text=True, check=True, **kwargs)


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


def recognise(env: dict[str, str], folder: Path, *options: str) -> tuple[list[dict[str, Any]], float]:
    """`producer submit` a folder and `producer results --wait`: the rows and the seconds taken."""
    start = time.perf_counter()
    out = run([*script("producer"), "submit", str(folder), "--json", *options], env, capture_output=True).stdout
    job = json.loads(out.strip().splitlines()[-1])["job"]
    lines = run(
        [*script("producer"), "results", job, "--wait", "--timeout", "1800", "--format", "jsonl"],
        env,
        capture_output=True,
    ).stdout.splitlines()
    return [json.loads(line) for line in lines], time.perf_counter() - start


def accuracy(rows: list[dict[str, Any]], truth: dict[str, int]) -> float:
    return sum(1 for r in rows if r["label"] == truth.get(r["item"])) / max(len(rows), 1)


def read_fields(
    env: dict[str, str], folder: Path, images: np.ndarray, labels: np.ndarray, count: int
) -> dict[str, Any]:
    """Comb-box ZIP codes (``--field --length 5``) and free 3-8-digit numbers (``--field``): the
    share read exactly, and how fast."""
    pool = DigitPool(images, labels)
    out: dict[str, Any] = {}
    for kind, options in (("comb", ["--length", "5"]), ("free", [])):
        truth = write_fields(folder / kind, pool, count // 2, STYLES[kind], seed=5)
        rows, seconds = recognise(env, folder / kind, "--field", *options)
        exact = sum(1 for r in rows if r["text"] == truth.get(r["item"])) / max(len(rows), 1)
        say(f"{len(rows)} {kind} fields: {exact:.1%} read exactly ({len(rows) / seconds:.1f} fields/s)")
        out[kind] = {"fields": len(rows), "exact": exact, "review": sum(1 for r in rows if r["review"])}
    return out


def demo(settings: Settings, *, count: int, epochs: int, keep: bool, fields: int = 200) -> dict[str, Any]:
    with pipeline(settings, epochs) as (env, registry, _), tempfile.TemporaryDirectory(prefix="inkq-demo-") as tmp:
        folder = Path(tmp) / "scans"
        images, labels = load_mnist(settings.path("data_root"), train=False)
        truth = page_scans(folder, images, labels, count, seed=0)
        say(f"wrote {len(truth)} scan-like digits to {folder}; submitting them")
        results, seconds = recognise(env, folder)
        if keep:
            shutil.copytree(folder, STATE_DIR / "scans", dirs_exist_ok=True)
        batches = sorted({r["batch"]["id"]: r["batch"]["size"] for r in results if r["batch"]}.values())
        field_figures = read_fields(env, Path(tmp) / "fields", images, labels, fields) if fields else {}
        return {
            "items": len(results),
            "accuracy": accuracy(results, truth),
            "errors": sum(1 for r in results if r["error"]),
            "seconds": seconds,
            "images_per_second": len(results) / seconds,
            "model_version": registry.current(),
            "batches": len(batches),
            "largest_batch": batches[-1] if batches else 0,
            "fields": field_figures,
        }


def finetune_demo(settings: Settings, *, labels: int, test: int, epochs: int) -> dict[str, Any]:
    """Label a few hundred digits of a new style, retrain, and watch the running worker switch."""
    root = settings.path("data_root")
    train_images, train_labels = load_mnist(root, train=True)
    test_images, test_labels = load_mnist(root, train=False)
    rng = np.random.default_rng(1)
    with pipeline(settings, epochs) as (env, registry, worker), tempfile.TemporaryDirectory(prefix="inkq-ft-") as tmp:
        work = Path(tmp)
        before = registry.current()
        chosen = rng.choice(len(test_images), size=min(test, len(test_images)), replace=False)
        styled = write_digits(work / "style-test", test_images[chosen], test_labels[chosen], style=outlined)
        rows, _ = recognise(env, work / "style-test")
        style_before = accuracy(rows, styled)
        say(f"{before} reads {len(styled)} outlined test digits with accuracy {style_before:.2%}")

        chosen = rng.choice(len(train_images), size=labels, replace=False)
        write_digits(work / "labels", train_images[chosen], train_labels[chosen], style=outlined, by_label=True)
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
