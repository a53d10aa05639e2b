"""Shared fixtures: a hermetic redis-server on a free port, MNIST on disk, scan-like images.

Redis: every test session starts its own server. Without a redis-server binary the Redis tests
are skipped on a developer's machine but fail under CI=true, where a skip would hide a hole.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import redis

from bench.synth import WorkerProcess, write_digits

ROOT = Path(__file__).resolve().parents[1]
# The installed console scripts (`producer`, `trainer`), beside the Python running the tests.
BIN = Path(sys.executable).parent
MnistArrays = tuple[np.ndarray, np.ndarray]
__all__ = ["BIN", "ROOT", "MnistArrays", "WorkerProcess", "wait_for", "write_digits"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required, not skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A private redis-server on a free port for the whole session; its URL."""
    from config import StoreUnavailableError
    from producer.local import local_redis

    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    try:
        with local_redis() as url:
            yield url
    except StoreUnavailableError as exc:
        unavailable(str(exc))


@pytest.fixture()
def redis_url(redis_server: str) -> str:
    """A clean database for each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = Path(os.environ.get("INKQ_TEST_MNIST", ROOT.parent / "shared" / "data" / "mnist")).resolve()
    if not (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists():
        unavailable(f"MNIST not found under {root} (set INKQ_TEST_MNIST)")
    return root


@pytest.fixture(scope="session")
def mnist_test(mnist_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The raw MNIST test images (uint8, N x 28 x 28) and labels."""
    from bench.synth import load_mnist

    return load_mnist(mnist_root, train=False)


@pytest.fixture()
def env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """Environment for inkq subprocesses: the test Redis, a private compile cache."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("INKQ_")}
    out |= {
        "INKQ_REDIS_URL": redis_url,
        "INKQ_COMPILE_CACHE_DIR": str(tmp_path / "compile-cache"),
        "PYTHONUNBUFFERED": "1",
    }
    return out


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it holds, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        pause.wait(interval)


@pytest.fixture(scope="session")
def small_model(mnist_root: Path) -> tuple[bytes, dict[str, object]]:
    """A real model trained briefly on an MNIST subset (about 97% accurate): weights and metadata."""
    import torch

    from recognizer import artifact, network, scan
    from recognizer.engine import bf16_capable
    from trainer.data import load_split, split_validation
    from trainer.training import TrainConfig, fit

    data, fingerprint = load_split(mnist_root, train=True, limit=4000)
    train, val = split_validation(data, 500, seed=0)
    torch.manual_seed(0)
    model = network.build()
    result = fit(
        model,
        train,
        val,
        TrainConfig(
            epochs=2, learning_rate=0.05, bf16=bf16_capable(torch.device("cpu")), progress=False, ema_decay=0.9
        ),
    )
    meta = {
        "arch": dict(network.DEFAULT_ARCH),
        "preprocess_version": scan.PREPROCESS_VERSION,
        "temperature": result.temperature,
        "data_fingerprint": fingerprint,
        "metrics": {"val_accuracy": result.val_accuracy},
        "status": "promoted",
    }
    return artifact.dump(model), meta


@pytest.fixture()
def published(redis_url: str, small_model: tuple[bytes, dict[str, object]]) -> str:
    """The small model published as the current version in this test's Redis."""
    from storage.connection import connect
    from storage.keys import Keys
    from storage.registry import Registry, VersionInfo

    weights, meta = small_model
    return Registry(connect(redis_url), Keys()).publish(weights, VersionInfo(**meta)).version  # type: ignore[arg-type]


@pytest.fixture()
def worker(env: dict[str, str], published: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real eager worker serving the small model (tests that need other settings start their own)."""
    w = WorkerProcess(env, "main", tmp_path / "worker.log", {"compile": "false", "precision": "fp32"})
    yield w
    w.stop()
