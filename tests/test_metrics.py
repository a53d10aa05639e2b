"""Worker metrics: what each part counts (with in-memory parts), the endpoint's token and probe,
and one real worker scraped over HTTP after a real job."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from config import ConfigError, Settings
from config.errors import BlankImageError, ImageTooLargeError
from producer.local import free_port
from recognizer import scan
from recognizer.prediction import Prediction
from recognizer.preprocessing import Preprocessor
from storage import workers
from storage.connection import connect
from storage.keys import Keys
from tests.conftest import BIN, MnistArrays, WorkerProcess, write_digits
from worker import metrics_http
from worker.batcher import Batcher
from worker.metrics import WorkerMetrics
from worker.replica import Replica

TOKEN = "s3cret-metrics-token"


def sample(m: WorkerMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


class _Engine:
    version = "v7"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def predict(self, batch: Any) -> list[Prediction]:
        if self.fail:
            raise RuntimeError("CUDA error: device-side assert")
        return [Prediction(3, 0.9, [(3, 0.9)]) for _ in range(len(batch))]


class _Images:
    """The image store, in memory: a digest's bytes are its name; "gone" has expired."""

    def fetch_images(self, digests: list[str]) -> list[bytes | None]:
        return [None if d == "gone" else d.encode() for d in digests]


def batch_replica(monkeypatch: pytest.MonkeyPatch, engine: _Engine) -> Replica:
    """A replica with only its batch function live: no Redis, no model."""
    replica = Replica.__new__(Replica)
    replica.settings, replica.engine = Settings(), engine  # type: ignore[assignment]
    replica.jobs = _Images()  # type: ignore[assignment]
    replica.prep = Preprocessor(0, max_bytes=10**6, max_pixels=10**6)
    replica.metrics = WorkerMetrics()
    raised = {b"big": ImageTooLargeError("too big"), b"blank": BlankImageError("no ink"), b"junk": ValueError("x")}

    def preprocess(blob: bytes, **_: int) -> np.ndarray:
        if blob in raised:
            raise raised[blob]
        return np.zeros((1, 28, 28), np.float32)

    monkeypatch.setattr(scan, "preprocess", preprocess)
    return replica


def test_a_batch_counts_each_image_by_outcome_and_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    replica = batch_replica(monkeypatch, _Engine())
    served = replica._run(["ok", "big", "blank", "junk", "gone", "ok2"])
    assert [s.error is None for s in served] == [True, False, False, False, False, True]
    m = replica.metrics
    assert sample(m, "inkq_images_processed_total") == 2
    failed = {r: sample(m, "inkq_images_failed_total", reason=r) for r in ("too_large", "blank", "decode", "missing")}
    assert failed == {"too_large": 1, "blank": 1, "decode": 1, "missing": 1}
    assert sample(m, "inkq_batch_size_images_count") == 1 and sample(m, "inkq_batch_size_images_sum") == 6
    assert sample(m, "inkq_preprocess_seconds_count") == 5  # every image that had bytes
    assert sample(m, "inkq_model_seconds_count") == 1
    # The label is a class, never an error's text.
    labels = {s.labels.get("reason") for metric in m.registry.collect() for s in metric.samples}
    assert labels <= {None, "too_large", "blank", "decode", "missing"}


def test_a_failed_model_call_counts_its_images_as_model_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    replica = batch_replica(monkeypatch, _Engine(fail=True))
    with pytest.raises(RuntimeError, match="device-side"):
        replica._run(["a", "b", "blank"])
    m = replica.metrics
    assert sample(m, "inkq_images_failed_total", reason="model") == 2
    assert sample(m, "inkq_images_failed_total", reason="blank") == 1
    assert sample(m, "inkq_images_processed_total") == 0


def test_batcher_reports_flush_reasons_and_the_oldest_wait() -> None:
    reasons: list[str] = []
    release = threading.Event()

    def run(values: list[int]) -> list[int]:
        release.wait(10)
        return values

    batcher: Batcher[int, int] = Batcher(run, max_batch=2, max_wait_s=0.05, on_flush=reasons.append)
    try:
        assert batcher.oldest_wait_s() == 0.0
        first = batcher.submit([1, 2])  # full: taken at once, then held in run
        queued = batcher.submit([3])  # waits behind the running batch
        pause = threading.Event()
        pause.wait(0.1)  # so that the waiting image has a measurable age
        assert batcher.oldest_wait_s() >= 0.1
        release.set()
        for future in first + queued:
            future.result(timeout=10)
        assert reasons == ["full", "deadline"]
        assert batcher.oldest_wait_s() == 0.0
    finally:
        release.set()
        batcher.stop()


def test_the_version_gauge_keeps_only_the_version_in_use() -> None:
    m = WorkerMetrics()
    m.serving("v1", 2.5)
    m.serving("v2", 1.5)
    assert sample(m, "inkq_model_version_info", version="v2") == 1
    assert m.registry.get_sample_value("inkq_model_version_info", {"version": "v1"}) is None
    assert sample(m, "inkq_model_warm_seconds") == 1.5
    m.watch_oldest(lambda: 4.0)
    assert sample(m, "inkq_oldest_waiting_seconds") == 4.0


def test_a_metrics_port_without_a_token_is_refused() -> None:
    metrics_http.check(Settings())  # off by default
    with pytest.raises(ConfigError, match="INKQ_METRICS_TOKEN"):
        metrics_http.check(Settings(metrics_port=9808))
    with pytest.raises(ConfigError, match="1-65535"):
        metrics_http.check(Settings(metrics_port=70000, metrics_token=TOKEN))
    assert TOKEN not in repr(Settings(metrics_port=9808, metrics_token=TOKEN))


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_need_the_token_and_the_probe_follows_health() -> None:
    m = WorkerMetrics()
    m.images_processed.inc(3)
    health = [(False, "model loading and warming")]
    server = metrics_http.MetricsServer("127.0.0.1", 0, metrics_http.metrics_app(m.registry, TOKEN, lambda: health[0]))
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(f"{base}/metrics")[0] == 401
        assert get(f"{base}/metrics", "wrong")[0] == 401
        status, body = get(f"{base}/metrics", TOKEN)
        assert status == 200 and b"inkq_images_processed_total 3.0" in body
        status, body = get(f"{base}/healthz")
        assert status == 503 and json.loads(body) == {"healthy": False, "reason": "model loading and warming"}
        health[0] = (True, "serving model v1")
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/other", TOKEN)[0] == 404
    finally:
        server.close()


def test_health_says_loading_then_stalled() -> None:
    assert metrics_http.replica_health(None) == (False, "model loading and warming")

    class _Stalled:
        def stalled_for(self) -> float:
            return 300.0

    replica = Replica.__new__(Replica)
    replica.settings, replica.batcher = Settings(stall_timeout_s=120), _Stalled()  # type: ignore[assignment]
    replica.last_beat_ok = time.monotonic()
    ok, reason = metrics_http.replica_health(replica)
    assert not ok and "stalled" in reason and "INKQ_STALL_TIMEOUT_S" in reason


def test_health_fails_when_redis_stopped_taking_heartbeats() -> None:
    class _Idle:
        def stalled_for(self) -> float:
            return 0.0

    replica = Replica.__new__(Replica)
    replica.settings, replica.batcher = Settings(), _Idle()  # type: ignore[assignment]
    replica.last_beat_ok = time.monotonic() - metrics_http.REDIS_SILENT_S - 5
    ok, reason = metrics_http.replica_health(replica)
    assert not ok and reason.startswith("Redis unreachable: no heartbeat written for")


def producer(env: dict[str, str], *args: str) -> str:
    command = [str(BIN / "producer"), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_real_worker_serves_its_metrics_after_a_job(
    env: dict[str, str], published: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    scans = tmp_path / "scans"
    write_digits(scans, mnist_test[0][:52], mnist_test[1][:52])
    for name in ("00050.png", "00051.png"):  # a valid header, half the data: fails to decode in the worker
        data = (scans / name).read_bytes()
        (scans / name).write_bytes(data[: len(data) // 2])
    port = free_port()
    settings = {"compile": "false", "precision": "fp32", "metrics_port": str(port), "metrics_token": TOKEN}
    worker = WorkerProcess(env, "metrics", tmp_path / "worker.log", settings)
    try:
        job = json.loads(producer(env, "submit", str(scans), "--json").splitlines()[-1])["job"]
        producer(env, "results", job, "--wait", "--timeout", "120")  # exits non-zero unless complete
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/metrics")[0] == 401
        status, body = get(f"{base}/metrics", TOKEN)
        assert status == 200, worker.log()
        text = body.decode()
        assert "inkq_images_processed_total 50.0" in text, text
        assert 'inkq_images_failed_total{reason="decode"} 2.0' in text, text
        assert f'inkq_model_version_info{{version="{published}"}} 1.0' in text
        count = next(line for line in text.splitlines() if line.startswith("inkq_batch_size_images_count"))
        assert float(count.split()[1]) > 0
        status, body = get(f"{base}/healthz")
        assert status == 200 and json.loads(body)["healthy"] is True
        state = workers.read(connect(env["INKQ_REDIS_URL"]), Keys(), worker.name)
        assert state is not None and state.metrics_port == port
    finally:
        worker.stop()
    assert TOKEN not in worker.full_log()


class _Letters:
    def __init__(self) -> None:
        self.added: list[Any] = []

    def add(self, letter: Any) -> None:
        self.added.append(letter)


class _DeadLetterReplica:
    def dead_letter_results(self, job: str, items: list[Any], error: str) -> int:
        return len(items)


def test_the_app_counts_messages_in_flight_and_dead_letters(monkeypatch: pytest.MonkeyPatch) -> None:
    app = importlib.import_module("worker.app")  # the module: the package's ``app`` is the Celery app
    monkeypatch.setattr(app, "_metrics", m := WorkerMetrics())
    seen: list[float] = []

    def deliver(*_: Any) -> int:
        seen.append(sample(m, "inkq_messages_in_flight"))
        return 0

    monkeypatch.setattr(app, "_deliver", deliver)
    app.recognize("job", [])
    assert seen == [1.0] and sample(m, "inkq_messages_in_flight") == 0

    monkeypatch.setattr(app, "replica", _DeadLetterReplica)
    args = ("job1", [[0, "d0", "a.png"], [1, "d1", "b.png"], "junk"])
    assert app._dead_letter(_Letters(), "task1", args, {}, 5, "boom") == 2
    assert sample(m, "inkq_messages_dead_lettered_total") == 1
    assert sample(m, "inkq_images_failed_total", reason="dead_letter") == 2


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_worker_with_a_metrics_port_and_no_token_refuses_to_start(env: dict[str, str], tmp_path: Path) -> None:
    command = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-n", "notoken@%h", "--without-gossip"]
    env = env | {"INKQ_METRICS_PORT": str(free_port())}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode != 0
    assert "INKQ_METRICS_TOKEN" in done.stdout + done.stderr, done.stderr[-3000:]
