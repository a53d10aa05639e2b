"""Scale-out: worker processes that share nothing but INKQ_REDIS_URL (their own compile caches and
host names, as on separate machines) serve one queue from one registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.synth import WorkerProcess, write_digits
from config.settings import load_settings
from producer.client import Client
from storage.connection import connect
from tests.conftest import MnistArrays, wait_for
from tests.gate import Gate
from tests.redis_servers import publish_untrained

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(300)
def test_workers_sharing_only_the_redis_url_serve_one_queue(
    env: dict[str, str], redis_url: str, tmp_path: Path, mnist_test: MnistArrays
) -> None:
    version = publish_untrained(connect(redis_url))
    # One message at a time per worker, and batches held at a gate until both workers have one.
    machine = {"compile": "false", "max_batch": "8", "worker_threads": "1", "prefetch_multiplier": "1"}
    gate = Gate(redis_url)
    names = {"w@machine-a", "w@machine-b"}
    workers = []
    try:
        for name in sorted(names):
            host = name.split("@")[1]
            settings = machine | {"compile_cache_dir": str(tmp_path / host / "compile-cache")}
            own = env | gate.env()
            workers.append(WorkerProcess(own, name, tmp_path / f"{host}.log", settings, app="tests.slow_worker"))
        images, labels = mnist_test
        write_digits(tmp_path / "scans", images[:96], labels[:96])
        client = Client(load_settings(env | {"INKQ_CHUNK_SIZE": "8"}))
        job = client.submit([str(tmp_path / "scans")]).job
        wait_for(lambda: set(gate.arrivals()) == names, 60, "a batch from each worker at the gate")
        gate.open()
        status = client.wait(job, timeout=120)
        assert (status.done, status.failed) == (96, 0)
        results = client.results(job)
        assert {r["worker"] for r in results} == {"w@machine-a", "w@machine-b"}
        assert {r["model_version"] for r in results} == {version}
    finally:
        for worker in workers:
            worker.stop()
