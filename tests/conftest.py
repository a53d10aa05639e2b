"""Shared fixtures: a hermetic redis-server on a free port, MNIST on disk, scan-like images.

Redis: every test session starts its own server. Without a redis-server binary the Redis tests
are skipped on a developer's machine but fail under CI=true, where a skip would hide a hole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from storage.registry import text

ROOT = Path(__file__).resolve().parents[1]
# The installed console scripts (`producer`, `trainer`), beside the Python running the tests.
BIN = Path(sys.executable).parent
MnistArrays = tuple[np.ndarray, np.ndarray]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required, not skipped)")
    pytest.skip(reason)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server process; ``url`` points at database 0."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Ready when the server says so; a timer kills it if it never does.
        timer = threading.Timer(20, self.process.kill)
        timer.start()
        try:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if "Ready to accept connections" in line:
                    break
            else:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
        finally:
            timer.cancel()
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # keep the pipe drained
        redis.Redis(port=self.port).ping()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    assert binary is not None
    with tempfile.TemporaryDirectory() as workdir:
        try:
            server = RedisServer(binary, Path(workdir))
        except RuntimeError as exc:
            unavailable(str(exc))
            raise
        yield server
        server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> str:
    """A clean database for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = Path(os.environ.get("INKQ_TEST_MNIST", ROOT.parent / "shared" / "data" / "mnist")).resolve()
    if not (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists():
        unavailable(f"MNIST not found under {root} (set INKQ_TEST_MNIST)")
    return root


@pytest.fixture(scope="session")
def mnist_test(mnist_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The raw MNIST test images (uint8, N x 28 x 28) and labels."""
    from trainer.data import load_raw

    return load_raw(mnist_root, train=False)


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


class WorkerProcess:
    """A real `celery -A worker worker` subprocess, ready (model loaded and warmed) on return."""

    def __init__(
        self, env: dict[str, str], name: str, log: Path, settings: dict[str, str], timeout: float = 240
    ) -> None:
        self.name = f"{name}@{socket.gethostname()}"
        self.log_path = log
        self.env = env | {f"INKQ_{k.upper()}": str(v) for k, v in settings.items()}
        self.client = redis.Redis.from_url(self.env["INKQ_REDIS_URL"])
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "-n",
                self.name,
                "--loglevel",
                "info",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        ready_key = f"{self.env.get('INKQ_KEY_PREFIX', 'inkq')}:workers:ready"
        deadline = time.monotonic() + timeout
        while True:
            got = self.client.blpop([ready_key], timeout=1)
            if got is not None and text(got[1]) == self.name:
                break
            if got is not None:
                self.client.rpush(ready_key, got[1])  # another worker's announcement: leave it
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"worker {self.name} did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-6000:]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        self.client.close()


@pytest.fixture(scope="session")
def small_model(mnist_root: Path) -> tuple[bytes, dict[str, object]]:
    """A real model trained briefly on an MNIST subset (about 97% accurate): weights and metadata."""
    import torch

    from recognizer import artifact, network, scan
    from trainer.data import load_split, split_validation
    from trainer.training import TrainConfig, bf16_supported, fit

    data, fingerprint = load_split(mnist_root, train=True, limit=4000)
    train, val = split_validation(data, 500, seed=0)
    torch.manual_seed(0)
    model = network.build()
    result = fit(
        model,
        train,
        val,
        TrainConfig(epochs=2, learning_rate=0.05, bf16=bf16_supported(), progress=False, ema_decay=0.9),
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


def write_digits(folder: Path, images: np.ndarray, labels: np.ndarray, fmt: str = "png") -> dict[str, int]:
    """MNIST digits as scan-like files (dark ink on white); returns path -> true label."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        path = folder / f"{i:05d}.{fmt}"
        Image.fromarray(255 - img).save(path)
        truth[str(path)] = int(label)
    return truth
