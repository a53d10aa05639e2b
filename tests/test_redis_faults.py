"""Redis over a job's life: every key inkq leaves behind expires or is durable by design, and a
Redis crash (SIGKILL, AOF with appendfsync always) in the middle of a job loses nothing."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from producer.local import free_port, local_redis
from storage.connection import connect
from storage.jobs import Jobs
from storage.keys import Keys, durable_patterns
from tests.conftest import BIN, MnistArrays, WorkerProcess, wait_for, write_digits
from tests.redis_servers import publish_untrained

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WORKER = {"compile": "false", "precision": "fp32", "worker_threads": "2"}


def submit(env: dict[str, str], folder: Path) -> str:
    run = subprocess.run(
        [str(BIN / "producer"), "submit", str(folder), "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return str(json.loads(run.stdout.strip().splitlines()[-1])["job"])


@pytest.mark.timeout(300)
def test_every_key_a_job_leaves_expires_or_is_durable_by_design(
    env: dict[str, str], redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    publish_untrained(connect(redis_url))
    # The sweeper sweeps every half second, so its keys are among those checked.
    worker = WorkerProcess(env, "ttl", tmp_path / "worker.log", WORKER | {"sweep_interval_s": "0.5"})
    try:
        write_digits(tmp_path / "scans", mnist_test[0][:30], mnist_test[1][:30])
        job = submit(env, tmp_path / "scans")
        run = subprocess.run(
            [str(BIN / "producer"), "results", job, "--wait", "--timeout", "120", "--format", "jsonl"],
            env=env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert run.returncode == 0 and len(run.stdout.splitlines()) == 30, run.stderr
        stats = connect(redis_url), Keys().worker_stats(worker.name)
        wait_for(lambda: int(stats[0].hget(stats[1], "sweeps") or 0) >= 2, 30, "two sweeps")
    finally:
        worker.stop()
    keys = Keys()
    client = connect(redis_url)
    durable = durable_patterns(keys)
    seen: dict[str, int] = {}
    for raw in client.scan_iter(count=1000):
        name = raw.decode()
        seen[name] = client.ttl(name)
    assert keys.job(job) in seen and keys.sweep_fence in seen
    expiring = [k for k, ttl in seen.items() if ttl > 0]
    assert any(k.startswith(keys.image("")) for k in expiring) and keys.job_results(job) in expiring
    forever = sorted(k for k, ttl in seen.items() if ttl == -1 and not any(fnmatch.fnmatchcase(k, p) for p in durable))
    assert forever == [], f"keys without a TTL and not durable by design (storage/keys.py DURABLE): {forever}"


@pytest.mark.timeout(600)
def test_a_redis_crash_mid_job_loses_nothing(env: dict[str, str], mnist_test: MnistArrays, tmp_path: Path) -> None:
    total = 600
    state, port = tmp_path / "redis-state", free_port()
    with contextlib.ExitStack() as cleanup:
        with contextlib.ExitStack() as first:
            # appendfsync always: Redis answers a write only after it is on disk, so a SIGKILL (a crash,
            # not a clean shutdown that would flush anyway) loses nothing that any client was told.
            url = first.enter_context(local_redis(state, port=port, fsync="always"))
            client = connect(url)
            publish_untrained(client)
            run_env = env | {"INKQ_REDIS_URL": url, "INKQ_CHUNK_SIZE": "10", "INKQ_VISIBILITY_TIMEOUT_S": "20"}
            worker = WorkerProcess(run_env, "crash", tmp_path / "worker.log", WORKER | {"prefetch_multiplier": "1"})
            cleanup.callback(worker.stop)
            truth = write_digits(tmp_path / "scans", mnist_test[0][:total], mnist_test[1][:total])
            started = time.monotonic()
            job = submit(run_env, tmp_path / "scans")
            jobs = Jobs(client, Keys(), ttl_s=3600)
            wait_for(lambda: jobs.status(job).done >= 60, 120, "the job to be under way")
            done_at_crash = jobs.status(job).done
            pid = int(client.info("server")["process_id"])
            os.kill(pid, signal.SIGKILL)
            crashed = time.monotonic()

            # Stay down until the worker has noticed on every connection and its model watch has failed
            # to resubscribe once more, so that each part must reconnect on its own.
            def noticed() -> bool:
                log = worker.log_path.read_text()
                return "Connection to broker lost" in log and log.count("model version watch failed") >= 2

            wait_for(noticed, 60, "the worker to notice the crash")
        again = cleanup.enter_context(local_redis(state, port=port, fsync="always"))
        cleanup.callback(worker.stop)  # before that Redis goes (stop does nothing the second time)
        downtime = time.monotonic() - crashed
        assert again == url
        client = connect(again)
        jobs = Jobs(client, Keys(), ttl_s=3600)
        wait_for(lambda: jobs.status(job).complete, 240, "the job to complete after the restart", interval=0.2)
        elapsed = time.monotonic() - started
        status = jobs.status(job)
        results = jobs.results(job)
        # The same worker process is still serving, and its model watch came back with Redis.
        assert worker.process.poll() is None, "the worker died instead of reconnecting"
        newer = publish_untrained(client)
        wait_for(
            lambda: json.loads(client.get(Keys().worker(worker.name)) or "{}").get("version") == newer,
            90,
            "a hot swap after the restart",
        )
    assert done_at_crash < total, "the job ended before the crash: nothing was tested"
    assert (status.total, status.done, status.failed) == (total, total, 0)
    items = [r["item"] for r in results]
    assert sorted(items) == sorted(truth) and len(set(items)) == total  # every item exactly once
    print(
        f"\nredis crash: {total} items, {done_at_crash} done at the crash, downtime {downtime:.2f}s, "
        f"job complete {elapsed:.1f}s after submit"
    )
