"""The sweeper: a job whose message was lost (a worker SIGKILLed between kombu's BRPOP and its
unacked record) still completes, and a job whose work is merely slow or in flight is left alone.

The decision tests run the real Sweeper against the test's real redis-server, with real Celery
messages in kombu's lists, and record what it would send instead of queueing it. The last test is
the whole story with a real worker process: a message taken off the broker list by hand, exactly
what a worker killed after BRPOP leaves behind.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from config import Settings
from producer.client import Client
from storage import queue, workers
from storage.broker import in_flight, message_job
from storage.connection import connect
from storage.deadletters import DeadLetters
from storage.jobs import ItemResult, Jobs
from storage.keys import Keys
from storage.lifecycle import Lifecycle
from storage.lock import acquire, held
from storage.priority import Priority, lists
from storage.sweep_rules import CONFIRM_GAP_S, JobView, Seen, Verdict, confirm, triage
from storage.sweeper import Sweeper, job_requeued, sweep_locked
from storage.utils import as_text
from tests.conftest import BIN, MnistArrays, WorkerProcess, wait_for, write_digits

KEYS = Keys()
# Where submit and the sweeper queue messages: the normal-priority list (storage/priority.py).
NORMAL_LIST = lists(KEYS, "inkq")[Priority.NORMAL.rank]
# Sweeps are given their clock: a little ahead of the jobs a test creates. Set again before each
# test (a value from import time falls behind the jobs of a test that runs minutes later).
NOW = time.time() + 60


@pytest.fixture(autouse=True)
def _clock() -> None:
    global NOW  # noqa: PLW0603
    NOW = time.time() + 60


class Sent:
    """Stands in for queue.enqueue: records each message the sweeper would send."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[list[Any]]]] = []

    def __call__(self, job: str, items: list[list[Any]]) -> None:
        self.messages.append((job, items))

    @property
    def indices(self) -> list[int]:
        return [item[0] for _, items in self.messages for item in items]


@pytest.fixture()
def jobs(redis_url: str) -> Jobs:
    return Jobs(connect(redis_url), KEYS, ttl_s=3600)


def submitted_job(jobs: Jobs, total: int = 10, chunk: int = 4) -> str:
    """A fully queued job with a manifest, as `producer submit` leaves it (its messages not sent)."""
    lifecycle = Lifecycle(jobs)
    job = lifecycle.begin([(i, f"{i:064x}", f"scan{i}.png") for i in range(total)], chunk, None, "token")
    lifecycle.submitted(job, "token")
    return job


def write(jobs: Jobs, job: str, *indices: int) -> None:
    jobs.write_results(ItemResult(job, i, {"item": f"scan{i}.png", "label": 1, "error": None}) for i in indices)


def sweeper(jobs: Jobs, sent: Sent, stall_s: float = 0.0, **kw: Any) -> Sweeper:
    return Sweeper(jobs, "inkq", sent, stall_s, **kw)


def sweep_twice(s: Sweeper, jobs: Jobs) -> tuple[Verdict, Verdict]:
    with held(jobs.redis, KEYS.sweep_lock, KEYS.sweep_fence, 30, "sweep") as lease:
        first = s.sweep(lease, now=NOW)
        second = s.sweep(lease, now=NOW + CONFIRM_GAP_S)
    (job,) = first.verdicts
    return first.verdicts[job], second.verdicts[job]


def beat(client: Client, name: str) -> workers.WorkerState | None:
    return workers.read(client.redis, client.keys, name)


def producer_sweep(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), "sweep", *args], env=env, check=False, capture_output=True, text=True, timeout=60
    )


def view(done: int = 3, updated: str = "", state: str | None = "queued", created: float | None = None) -> JobView:
    return JobView("j", state, 10, done, NOW - 100 if created is None else created, updated, 4)


def test_decision_rules() -> None:
    assert triage(None, NOW, 60) is Verdict.FINISHED  # expired
    assert triage(view(done=10), NOW, 60) is Verdict.FINISHED
    assert triage(view(state="cancelled"), NOW, 60) is Verdict.FINISHED
    assert triage(view(state="submitting"), NOW, 60) is Verdict.SUBMITTING
    assert triage(view(updated=str(NOW - 10)), NOW, 60) is Verdict.ACTIVE  # wrote a result 10 s ago
    assert triage(view(created=NOW - 10), NOW, 60) is Verdict.ACTIVE  # queued 10 s ago
    assert triage(view(updated=str(NOW - 61)), NOW, 60) is None  # stalled: look at the broker
    stalled = view(updated="5.5")
    assert confirm(stalled, None, False, NOW) is Verdict.IDLE
    assert confirm(stalled, Seen(3, "5.5", NOW - 5), True, NOW) is Verdict.IN_FLIGHT
    assert confirm(stalled, Seen(3, "5.5", NOW - 5), False, NOW) is Verdict.REQUEUE
    assert confirm(stalled, Seen(2, "4.0", NOW - 5), False, NOW) is Verdict.IDLE  # it moved since
    assert confirm(stalled, Seen(3, "5.5", NOW - CONFIRM_GAP_S / 2), False, NOW) is Verdict.IDLE  # too soon


def test_requeues_exactly_the_missing_items_after_two_idle_sweeps(jobs: Jobs) -> None:
    job = submitted_job(jobs, total=10, chunk=4)
    write(jobs, job, 0, 1, 2, 3, 5, 9)  # chunk 0 done; 4, 6, 7 of chunk 1 and 8 of chunk 2 lost
    sent = Sent()
    assert sweep_twice(sweeper(jobs, sent), jobs) == (Verdict.IDLE, Verdict.REQUEUE)
    assert sent.messages == [
        (job, [[4, f"{4:064x}", "scan4.png"], [6, f"{6:064x}", "scan6.png"], [7, f"{7:064x}", "scan7.png"]]),
        (job, [[8, f"{8:064x}", "scan8.png"]]),
    ]
    assert job_requeued(jobs, job) == 4
    # Requeued: its clock starts again, so the next sweeps leave it alone while the requeue runs.
    again = Sent()
    with held(jobs.redis, KEYS.sweep_lock, KEYS.sweep_fence, 30, "sweep") as lease:
        assert sweeper(jobs, again, stall_s=60).sweep(lease, now=NOW + 2).verdicts[job] is Verdict.ACTIVE
    assert again.messages == []


def test_no_requeue_while_a_message_of_the_job_is_queued(jobs: Jobs, redis_url: str) -> None:
    job = submitted_job(jobs)
    queue.enqueue(queue.make_app(Settings(redis_url=redis_url)), job, [[8, f"{8:064x}", "scan8.png"]])
    sent = Sent()
    assert sweep_twice(sweeper(jobs, sent), jobs) == (Verdict.IN_FLIGHT, Verdict.IN_FLIGHT)
    assert sent.messages == [] and jobs.redis.hlen(KEYS.sweep_seen) == 0


def test_no_requeue_while_a_message_of_the_job_is_unacked(jobs: Jobs, redis_url: str) -> None:
    job = submitted_job(jobs)
    queue.enqueue(queue.make_app(Settings(redis_url=redis_url)), job, [[8, f"{8:064x}", "scan8.png"]])
    raw = jobs.redis.rpop(NORMAL_LIST)  # what a live worker's BRPOP then kombu's QoS.append do
    assert isinstance(raw, bytes)
    tag = json.loads(raw)["properties"]["delivery_tag"]
    jobs.redis.hset(KEYS.broker_unacked, tag, json.dumps([json.loads(raw), "", "inkq"]))
    assert message_job(jobs.redis.hget(KEYS.broker_unacked, tag) or b"") == job
    sent = Sent()
    assert sweep_twice(sweeper(jobs, sent), jobs) == (Verdict.IN_FLIGHT, Verdict.IN_FLIGHT)
    assert sent.messages == []


def test_an_unreadable_broker_message_blocks_every_requeue(jobs: Jobs) -> None:
    job = submitted_job(jobs)
    jobs.redis.lpush(KEYS.queue_list("inkq"), b"not a kombu message")
    assert in_flight(jobs.redis, KEYS, "inkq").holds(job)
    sent = Sent()
    assert sweep_twice(sweeper(jobs, sent), jobs) == (Verdict.IN_FLIGHT, Verdict.IN_FLIGHT)
    assert sent.messages == []


def test_no_requeue_while_the_job_progresses(jobs: Jobs) -> None:
    job = submitted_job(jobs)
    sent = Sent()
    s = sweeper(jobs, sent)
    with held(jobs.redis, KEYS.sweep_lock, KEYS.sweep_fence, 30, "sweep") as lease:
        assert s.sweep(lease, now=NOW).verdicts[job] is Verdict.IDLE
        write(jobs, job, 0)  # a worker wrote a result between the two sweeps
        assert s.sweep(lease, now=NOW + 5).verdicts[job] is Verdict.IDLE  # seen afresh, not requeued
        # A result written within the stall time: not even looked at.
        assert sweeper(jobs, sent, stall_s=3600).sweep(lease).verdicts[job] is Verdict.ACTIVE
    assert sent.messages == []


def test_complete_cancelled_and_submitting_jobs_are_never_requeued(jobs: Jobs) -> None:
    complete, cancelled = submitted_job(jobs, total=2), submitted_job(jobs)
    write(jobs, complete, 0, 1)
    Lifecycle(jobs).cancel(cancelled)
    submitting = Lifecycle(jobs).begin([(0, "0" * 64, "a.png")], 4, None, "held")
    # Finishing took the complete and the cancelled job out of the index; one finished before
    # that (an older version's write) is still there, as the complete one is put back here.
    assert [as_text(j) for j in jobs.redis.zrange(KEYS.jobs_active, 0, -1)] == [submitting]
    jobs.redis.zadd(KEYS.jobs_active, {complete: NOW})
    sent = Sent()
    s = sweeper(jobs, sent)
    with held(jobs.redis, KEYS.sweep_lock, KEYS.sweep_fence, 30, "sweep") as lease:
        first, second = s.sweep(lease, now=NOW).verdicts, s.sweep(lease, now=NOW + 5).verdicts
    assert sent.messages == []
    assert first == {complete: Verdict.FINISHED, submitting: Verdict.SUBMITTING}
    assert second == {submitting: Verdict.SUBMITTING}
    assert [as_text(j) for j in jobs.redis.zrange(KEYS.jobs_active, 0, -1)] == [submitting]  # finished ones dropped


def test_the_lock_keeps_two_sweepers_from_both_requeuing(jobs: Jobs) -> None:
    job = submitted_job(jobs)
    a_sent, b_sent = Sent(), Sent()
    a, b = sweeper(jobs, a_sent), sweeper(jobs, b_sent)
    with held(jobs.redis, KEYS.sweep_lock, KEYS.sweep_fence, 30, "sweep") as lease:
        assert a.sweep(lease, now=NOW).verdicts[job] is Verdict.IDLE
        assert sweep_locked(b, 30) is None  # a holds the lock: b does not sweep at all
        assert a.sweep(lease, now=NOW + 5).verdicts[job] is Verdict.REQUEUE
    assert len(a_sent.messages) == 3 and job_requeued(jobs, job) == 10

    # A sweeper whose lock expired and was taken by another is fenced at its claim: it sends nothing.
    other = submitted_job(jobs)
    stale = acquire(jobs.redis, KEYS.sweep_lock, KEYS.sweep_fence, 30, "sweep")
    jobs.redis.delete(KEYS.sweep_lock)  # its lifetime ran out ...
    acquire(jobs.redis, KEYS.sweep_lock, KEYS.sweep_fence, 30, "sweep")  # ... and someone else holds it now
    assert b.sweep(stale, now=NOW + 10).verdicts[other] is Verdict.IDLE
    fenced = b.sweep(stale, now=NOW + 15)
    assert fenced.verdicts[other] is Verdict.REQUEUE and fenced.requeued == []
    assert b_sent.messages == [] and job_requeued(jobs, other) == 0


def test_a_dry_run_writes_nothing(jobs: Jobs) -> None:
    job = submitted_job(jobs)
    sent = Sent()
    s = sweeper(jobs, sent, dry_run=True)
    assert s.sweep(None, now=NOW).verdicts[job] is Verdict.IDLE
    report = s.sweep(None, now=NOW + 5)
    assert report.verdicts[job] is Verdict.REQUEUE and report.requeued_items == 10
    assert sent.messages == [] and jobs.redis.hlen(KEYS.sweep_seen) == 0 and job_requeued(jobs, job) == 0


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)  # its own work takes about 30 s; the first test to need the model trains it
def test_a_message_lost_between_brpop_and_unacked_is_requeued_and_the_job_completes(
    env: dict[str, str], published: str, redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    truth = write_digits(tmp_path / "scans", mnist_test[0][:40], mnist_test[1][:40])
    client = Client(Settings(redis_url=redis_url, chunk_size=5))
    job = client.submit([str(tmp_path / "scans")]).job  # eight messages wait: no worker yet
    # Exactly what a worker SIGKILLed after BRPOP, before kombu recorded the message, leaves behind.
    lost = client.redis.rpop(lists(client.keys, client.settings.queue)[Priority.NORMAL.rank])
    assert isinstance(lost, bytes)
    lost_items = json.loads(base64.b64decode(json.loads(lost)["body"]))[0][1]
    assert len(lost_items) == 5 and client.redis.hlen(client.keys.broker_unacked) == 0

    sweeping = {"compile": "false", "precision": "fp32", "sweep_interval_s": "0.5", "sweep_stall_s": "2"}
    worker = WorkerProcess(env, "sweeper", tmp_path / "worker.log", sweeping)
    try:
        status = client.wait(job, timeout=120)
        assert (status.total, status.done, status.failed) == (40, 40, 0), worker.log()
        rows = client.results(job)
        assert sorted(r["item"] for r in rows) == sorted(truth)  # every item, exactly once
        assert all(r["error"] is None for r in rows)
        assert job_requeued(client.jobs, job) == 5
        stats = client.redis.hgetall(client.keys.worker_stats(worker.name))
        assert int(stats[b"requeued_items"]) == 5 and int(stats[b"requeued_messages"]) == 1
        wait_for(lambda: int(client.redis.hget(client.keys.worker_stats(worker.name), "messages") or 0) == 8, 30, "8")
        assert DeadLetters(client.redis, client.keys, 60).all() == []
        assert f"sweep: job {job} stalled at 35/40" in worker.full_log()
        assert client.redis.hlen(client.keys.broker_unacked) == 0
        wait_for(
            lambda: getattr(beat(client, worker.name), "swept_at", None) is not None, 30, "a sweep in its heartbeat"
        )
        assert getattr(beat(client, worker.name), "sweep_error", "no heartbeat") is None
    finally:
        worker.stop()

    # The operator's command finds nothing left to do.
    run = producer_sweep(env, "--json", "--pause", "1")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["requeued"] == []


def test_producer_sweep_requeues_a_lost_message(redis_url: str, env: dict[str, str], jobs: Jobs) -> None:
    job = submitted_job(jobs, total=6, chunk=3)
    write(jobs, job, 0, 1, 2)
    run = producer_sweep(env, "--stall-s", "0", "--pause", "1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{job}: requeued 3 items in 1 messages"
    client = redis.Redis.from_url(redis_url)
    assert [message_job(raw) for raw in client.lrange(NORMAL_LIST, 0, -1)] == [job]
    assert job_requeued(jobs, job) == 3
