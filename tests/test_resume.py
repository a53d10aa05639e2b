"""Interrupted and cancelled jobs with real parts: a `producer submit` killed half-way and
resumed, a cancelled job whose messages a worker still takes. Each ends with every item exactly
once and exact counters."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from config import Settings
from producer.client import Client
from storage import queue
from storage.jobs import JobState
from tests.conftest import BIN, MnistArrays, WorkerProcess, wait_for, write_digits

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WORKER = {"compile": "false", "precision": "fp32", "worker_threads": "2", "prefetch_multiplier": "1"}


def producer(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def messages_handled(client: Client) -> int:
    """Messages every worker has handled, from their running totals."""
    return sum(int(client.redis.hget(k, "messages") or 0) for k in client.redis.scan_iter(match="inkq:worker:*:stats"))


@pytest.mark.timeout(300)
def test_submit_killed_halfway_then_resumed(
    env: dict[str, str], published: str, redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    truth = write_digits(tmp_path / "scans", mnist_test[0][:60], mnist_test[1][:60])
    client = Client(Settings(redis_url=redis_url))
    # Tiny chunks and a tiny queue bound, no worker: the submit queues three messages, then
    # blocks waiting for room: half-way, deterministically.
    slow = env | {"INKQ_CHUNK_SIZE": "4", "INKQ_QUEUE_MAX_MESSAGES": "3", "INKQ_SUBMIT_LEASE_S": "2"}
    log = tmp_path / "submit.log"
    with log.open("w") as err:
        submitter = subprocess.Popen([str(BIN / "producer"), "submit", str(tmp_path / "scans")], env=slow, stderr=err)
    try:
        wait_for(lambda: re.search(r"job (\w+): submitting 60 items", log.read_text()) is not None, 30, "the job id")
        job = re.findall(r"job (\w+): submitting", log.read_text())[0]
        queued = f"inkq:job:{job}:queued"
        wait_for(lambda: queue.depth(client.redis, client.settings) == 3 and client.redis.scard(queued) == 3, 30, "3")
    finally:
        submitter.kill()
        submitter.wait(10)
    assert client.status(job).state in (JobState.SUBMITTING, JobState.INTERRUPTED)

    waited = producer(env, "results", job, "--wait")  # no --timeout: must not wait for ever
    assert waited.returncode == 1 and f"run `producer submit --resume {job}`" in waited.stderr, waited.stderr
    assert "interrupted" in producer(env, "status", job).stdout

    resumed = producer(env | {"INKQ_QUEUE_MAX_MESSAGES": "1000"}, "submit", "--resume", job, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.splitlines()[-1]) == {"job": job, "items": 60, "rejected": []}
    assert queue.depth(client.redis, client.settings) == 15  # 3 before the kill + 12 resumed: none twice
    assert client.status(job).state is JobState.QUEUED

    worker = WorkerProcess(env, "resumed", tmp_path / "worker.log", WORKER)
    try:
        status = client.wait(job, timeout=120)
        assert (status.state, status.total, status.done, status.failed) == (JobState.COMPLETE, 60, 60, 0), worker.log()
        rows = client.results(job)
        assert sorted(r["item"] for r in rows) == sorted(truth)  # every item, exactly once
        wait_for(lambda: messages_handled(client) == 15, 30, "every message handled")
        assert messages_handled(client) == 15 and client.status(job).done == 60
    finally:
        worker.stop()


@pytest.mark.timeout(300)
def test_cancelled_job_stays_cancelled_when_a_worker_comes(
    env: dict[str, str], published: str, redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:40], mnist_test[1][:40])
    client = Client(Settings(redis_url=redis_url, chunk_size=5))
    job = client.submit([str(tmp_path / "scans")]).job  # eight messages wait: no worker yet
    run = producer(env, "cancel", job, "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert [summary[k] for k in ("state", "cancelled_items", "done", "failed")] == ["cancelled", 40, 40, 40]
    done = producer(env, "results", job, "--wait")  # completes at once: every item has its result
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 40 and all(r["error"].startswith("cancelled") for r in rows)

    worker = WorkerProcess(env, "late", tmp_path / "worker.log", WORKER)
    try:
        wait_for(lambda: messages_handled(client) == 8, 120, "the worker to take the eight messages")
    finally:
        worker.stop()
    status = client.status(job)
    assert (status.state, status.done, status.failed) == (JobState.CANCELLED, 40, 40)
    assert all(r["error"].startswith("cancelled") for r in client.results(job))
    skipped = sum(
        int(client.redis.hget(k, "skipped") or 0) for k in client.redis.scan_iter(match="inkq:worker:*:stats")
    )
    assert skipped == 40  # the worker never ran the model for a cancelled job
