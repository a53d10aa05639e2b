"""Every failure ends, and work stays bounded: poison messages are retried a bounded number of times
with backoff and dead-lettered, slow messages are not delivered twice, a stalled model gives its
messages away. Real redis-server, real `celery` worker processes, real model, real images."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import time
from pathlib import Path

import pytest
import redis

from config import Settings
from producer.client import Client
from storage import queue, workers
from storage.connection import connect
from storage.keys import Keys
from storage.utils import as_text
from tests.conftest import BIN, MnistArrays, WorkerProcess, wait_for, write_digits
from tests.gate import Gate

pytestmark = [pytest.mark.integration]
BASE = {"compile": "false", "precision": "fp32"}
DELIVERIES = "inkq-test:deliveries"


class SlowWorker(WorkerProcess):
    """`celery -A tests.slow_worker worker`: the real worker with a gated or hung model call."""

    def __init__(self, env: dict[str, str], name: str, log: Path, settings: dict[str, str], **test: str) -> None:
        test_env = env | test | {"INKQ_TEST_DELIVERIES": DELIVERIES}
        super().__init__(test_env, f"{name}@test", log, settings, app="tests.slow_worker")


def deliveries(client: redis.Redis) -> list[tuple[str, float]]:
    rows = [as_text(raw).split() for raw in client.lrange(DELIVERIES, 0, -1)]
    return [(task, float(at)) for task, at in rows]


def producer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture()
def scans(tmp_path: Path, mnist_test: MnistArrays) -> dict[str, int]:
    return write_digits(tmp_path / "scans", mnist_test[0][:16], mnist_test[1][:16])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_poison_message_is_retried_with_backoff_then_dead_lettered_and_requeued(
    env: dict[str, str], published: str, scans: dict[str, int], tmp_path: Path, redis_url: str
) -> None:
    settings = BASE | {"max_deliveries": "3", "retry_backoff_s": "0.5", "retry_backoff_max_s": "1"}
    worker = SlowWorker(env, "poison", tmp_path / "worker.log", settings)
    client = Client(Settings(redis_url=redis_url))
    try:
        # A poison message: one of its three items is malformed, so the whole message fails.
        digests = {}
        for path in sorted(scans)[:3]:
            data = Path(path).read_bytes()
            digests[path] = hashlib.sha256(data).hexdigest()
            client.jobs.store_images({digests[path]: data})
        paths = list(digests)
        poison_job = client.jobs.create(3)
        items = [[0, digests[paths[0]], paths[0]], [1, digests[paths[1]], paths[1]], [2, digests[paths[2]]]]
        poison = client.app.send_task(queue.TASK_NAME, args=[poison_job, items, time.time()]).id

        # A message that fails for a reason an operator can fix: its job's failed-items set is corrupt.
        fixable_job = client.jobs.create(2)
        client.redis.set(client.keys.job_failed(fixable_job), "not a set")
        fixable = client.app.send_task(queue.TASK_NAME, args=[fixable_job, items[:2], time.time()]).id

        status = client.wait(poison_job, timeout=60)
        assert (status.done, status.failed, status.total) == (3, 3, 3), worker.log()
        for row in client.results(poison_job):
            assert str(row["error"]).startswith("dead-lettered after 3 attempt(s): MessageError: 1 malformed item")
        starts = [at for task, at in deliveries(client.redis) if task == poison]
        assert len(starts) == 3, starts  # bounded: exactly max_deliveries deliveries
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert gaps[0] >= 0.5 and gaps[1] >= 1.0, gaps  # exponential backoff, capped at 1 s

        wait_for(lambda: len([t for t, _ in deliveries(client.redis) if t == fixable]) == 3, 60, "3 deliveries")
        listed: dict[str, dict[str, object]] = {}

        def both_listed() -> bool:
            run = producer(worker.env, "dead-letters", "--json")
            assert run.returncode == 0, run.stderr
            listed.update({row["task_id"]: row for row in map(json.loads, run.stdout.splitlines())})
            return {poison, fixable} <= set(listed)

        wait_for(both_listed, 30, "both dead letters listed")
        assert listed[poison]["job"] == poison_job and listed[poison]["item_count"] == 3
        assert listed[poison]["attempts"] == 3 and "malformed item" in str(listed[poison]["error"])
        assert "WRONGTYPE" in str(listed[fixable]["error"]) and listed[fixable]["attempts"] == 3
        assert not client.status(fixable_job).complete  # its error results could not be written either

        client.redis.delete(client.keys.job_failed(fixable_job))  # the operator fixes the cause
        run = producer(worker.env, "dead-letters", "--requeue", fixable)
        assert run.returncode == 0 and run.stdout.startswith(f"requeued {fixable}"), run.stderr
        status = client.wait(fixable_job, timeout=60)
        assert (status.done, status.failed, status.total) == (2, 0, 2), worker.log()
        rows = client.results(fixable_job)
        assert [r["item"] for r in rows] == paths[:2] and all(r["label"] is not None for r in rows)
        left = [
            json.loads(line)["task_id"] for line in producer(worker.env, "dead-letters", "--json").stdout.splitlines()
        ]
        assert left == [poison]
        missing = producer(worker.env, "dead-letters", "--requeue", "nope")
        assert missing.returncode == 1 and "no dead letter 'nope'" in missing.stderr
    finally:
        worker.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_message_slower_than_the_visibility_timeout_is_delivered_once(
    env: dict[str, str], published: str, scans: dict[str, int], tmp_path: Path, redis_url: str
) -> None:
    # Two messages of 8 images, both taken at once, one image per batch, and the batches held at a
    # gate until both messages have been held for four visibility timeouts.
    settings = BASE | {"visibility_timeout_s": "2", "max_batch": "1", "worker_threads": "2", "prefetch_multiplier": "1"}
    gate = Gate(redis_url)
    worker = SlowWorker(env, "slow", tmp_path / "worker.log", settings, **gate.env())
    client = Client(Settings(redis_url=redis_url, chunk_size=8))
    try:
        job = client.submit([str(tmp_path / "scans")]).job
        wait_for(lambda: len(deliveries(client.redis)) == 2 and gate.held() > 0, 60, "both messages taken")
        taken = max(at for _, at in deliveries(client.redis))

        def outlived() -> bool:  # the visibility keeper has re-stamped both well past their timeout
            rows = client.redis.zrange(Keys().broker_unacked_index, 0, -1, withscores=True)  # (tag, stamp)
            stamps = [float(row[1]) for row in rows]
            return len(stamps) == 2 and min(stamps) > taken + 4 * 2

        wait_for(outlived, 60, "both messages held for four visibility timeouts")
        gate.open()
        status = client.wait(job, timeout=120)
        assert (status.done, status.failed, status.total) == (16, 0, 16), worker.log()
        # Settled: nothing queued, nothing delivered and unacknowledged (a copy would be one or the other).
        wait_for(
            lambda: (
                queue.depth(client.redis, client.settings) == 0 and client.redis.zcard(Keys().broker_unacked_index) == 0
            ),
            60,
            "every message acknowledged",
        )
        started = deliveries(client.redis)
        assert len(started) == 2, started  # neither message was delivered again while it was held
    finally:
        worker.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_stalled_model_marks_worker_unhealthy_and_releases_its_messages(
    env: dict[str, str], published: str, scans: dict[str, int], tmp_path: Path, redis_url: str
) -> None:
    # A visibility timeout far beyond the test: only the release can hand the messages over.
    settings = BASE | {"stall_timeout_s": "1", "visibility_timeout_s": "600", "worker_threads": "2"}
    hung = SlowWorker(env, "hung", tmp_path / "hung.log", settings, INKQ_TEST_HANG="1")
    client = Client(Settings(redis_url=redis_url, chunk_size=8))
    rescuer: WorkerProcess | None = None
    try:
        job = client.submit([str(tmp_path / "scans")]).job
        wait_for(lambda: len(deliveries(client.redis)) >= 2, 30, "the hung worker to take both messages")

        def unhealthy() -> bool:
            state = workers.read(client.redis, client.keys, hung.name)
            return state is not None and not state.healthy

        wait_for(unhealthy, 30, "the heartbeat to report the stall")
        state = workers.read(client.redis, client.keys, hung.name)
        assert state is not None and state.stalled_s >= 1 and state.ready
        rescuer = WorkerProcess(env, "rescuer", tmp_path / "rescuer.log", settings)
        status = client.wait(job, timeout=90)
        assert (status.done, status.failed, status.total) == (16, 0, 16), hung.log()
        assert {r["worker"] for r in client.results(job)} == {rescuer.name}
        listed: dict[str, workers.WorkerState] = {}

        def rescuer_beat() -> bool:  # its next heartbeat counts what it served
            listed.update({w.hostname: w for w in workers.list_workers(client.redis, client.keys)})
            return listed[rescuer.name].items_served == 16

        wait_for(rescuer_beat, 30, "the rescuer's heartbeat")
        assert listed[rescuer.name].healthy and not listed[hung.name].healthy
        assert listed[rescuer.name].version == published and listed[rescuer.name].last_batch_at
    finally:
        hung.kill()
        if rescuer is not None:
            rescuer.stop()


def test_visibility_keeper_restamps_only_held_messages(redis_url: str) -> None:
    from worker.visibility import VisibilityKeeper

    client = connect(redis_url)
    key = Keys().broker_unacked_index
    client.zadd(key, {"held": 1.0, "other": 1.0})
    keeper = VisibilityKeeper(client, key, 4, lambda: ["held", "acked-meanwhile"])
    assert keeper.interval_s == 1.0
    assert keeper.extend() == 1
    scores = {m: client.zscore(key, m) for m in ("held", "other", "acked-meanwhile")}
    assert scores["other"] == 1.0 and (scores["held"] or 0) > time.time() - 60
    assert scores["acked-meanwhile"] is None  # never re-adds a message kombu already dropped


def test_worker_state_round_trip_keeps_unknown_fields(redis_url: str) -> None:
    client = connect(redis_url)
    keys = Keys()
    state = workers.WorkerState.from_dict({"hostname": "w1@h", "version": "v3", "eager_fallback": "why"})
    assert state.extra == {"eager_fallback": "why"}
    workers.write(client, keys, state, ttl_s=30)
    back = workers.read(client, keys, "w1@h")
    assert back is not None and back.version == "v3" and back.extra == {"eager_fallback": "why"}
    assert [w.hostname for w in workers.list_workers(client, keys)] == ["w1@h"]
    client.delete(keys.worker("w1@h"))  # expired
    assert workers.list_workers(client, keys) == [] and not client.zcard(keys.workers_index)
