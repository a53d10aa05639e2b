"""Scale-out: worker processes that share nothing but INKQ_REDIS_URL (their own compile caches and
host names, as on separate machines) serve one queue from one registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.synth import WorkerProcess, write_digits
from config.settings import load_settings
from producer.client import Client
from storage.connection import connect
from tests.conftest import MnistArrays
from tests.redis_servers import publish_untrained

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(300)
def test_workers_sharing_only_the_redis_url_serve_one_queue(
    env: dict[str, str], redis_url: str, tmp_path: Path, mnist_test: MnistArrays
) -> None:
    version = publish_untrained(connect(redis_url))
    # One message at a time per worker and a slow model call, so that both take part.
    machine = {"compile": "false", "max_batch": "8", "worker_threads": "1", "prefetch_multiplier": "1"}
    workers = []
    try:
        for host in ("machine-a", "machine-b"):
            cache = tmp_path / host / "compile-cache"
            settings = machine | {"compile_cache_dir": str(cache)}
            own = env | {"INKQ_TEST_BATCH_DELAY_S": "0.1"}
            workers.append(WorkerProcess(own, f"w@{host}", tmp_path / f"{host}.log", settings, app="tests.slow_worker"))
        images, labels = mnist_test
        write_digits(tmp_path / "scans", images[:96], labels[:96])
        client = Client(load_settings(env | {"INKQ_CHUNK_SIZE": "8"}))
        job = client.submit([str(tmp_path / "scans")]).job
        status = client.wait(job, timeout=120)
        assert (status.done, status.failed) == (96, 0)
        results = client.results(job)
        assert {r["worker"] for r in results} == {"w@machine-a", "w@machine-b"}
        assert {r["model_version"] for r in results} == {version}
    finally:
        for worker in workers:
            worker.stop()
