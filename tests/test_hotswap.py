"""Hot swap: a worker under continuous load switches to a new version with no failed item, and
never switches to a corrupt one."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from config import Settings
from producer.client import Client
from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry, VersionInfo
from tests.conftest import MnistArrays, WorkerProcess, wait_for, write_digits

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_switch_under_load_and_refuse_corrupt(
    env: dict[str, str],
    published: str,
    mnist_test: MnistArrays,
    small_model: tuple[bytes, dict[str, object]],
    tmp_path: Path,
    redis_url: str,
) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:16], mnist_test[1][:16])
    # Compiled, as in production, so the new version is compiled and warmed beside the old one.
    worker = WorkerProcess(
        env, "swapper", tmp_path / "worker.log", {"compile": "true", "buckets": "1,8,16", "max_batch": "16"}
    )
    client = Client(Settings(redis_url=redis_url, chunk_size=4))
    registry = Registry(connect(redis_url), Keys())
    jobs: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            while not stop.is_set():
                job = client.submit([str(tmp_path / "scans")]).job
                jobs.append(job)
                client.wait(job, timeout=120)
        except BaseException as exc:
            errors.append(exc)

    def seen_versions() -> set[str]:
        return {r["model_version"] for job in list(jobs)[-2:] for r in client.results(job)}

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        wait_for(lambda: "v1" in seen_versions(), 120, "results from v1")
        weights, meta = small_model
        v2 = registry.publish(weights, VersionInfo(**meta)).version  # type: ignore[arg-type]
        wait_for(lambda: seen_versions() == {v2}, 300, f"results from {v2}")

        # A corrupt artifact: published, damaged, then made current. The worker must refuse it.
        v3 = registry.publish(weights, VersionInfo(**meta), make_current=False).version  # type: ignore[arg-type]
        registry.redis.setrange(registry.keys.model_weights(v3), 1000, b"\x00" * 64)
        registry.set_current(v3)

        def refused() -> bool:
            state = json.loads(registry.redis.get(registry.keys.worker(worker.name)) or b"{}")
            return v3 in state.get("refused", {})

        wait_for(refused, 60, f"the worker to refuse {v3}")
        first_after = len(jobs)
        wait_for(lambda: len(jobs) > first_after + 1, 120, "more jobs served after the refusal")
    finally:
        stop.set()
        loader.join(180)
        worker.stop()
    assert not errors, errors
    rows = [r for job in jobs for r in client.results(job)]
    assert all(client.status(job).complete for job in jobs)
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]][:3]
    assert {r["model_version"] for r in rows} == {"v1", v2}
    assert "not switching to model v3" in worker.full_log()
