"""A wait rides out a Redis outage (a failover, a restart) and gives up, with the reason, when Redis
stays away."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import pytest
import redis

from config.errors import StoreUnavailableError
from producer.local import free_port
from storage.connection import connect
from storage.jobs import ItemResult, Jobs, JobStatus
from storage.keys import Keys
from storage.outage import Outage
from tests.conftest import wait_for
from tests.redis_servers import redis_process


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_failures_back_off_and_raise_with_the_reason_once_the_grace_is_spent() -> None:
    clock = Clock()
    outage = Outage("waiting for job j", grace_s=3.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(StoreUnavailableError) as raised:
        while True:
            outage.failed(redis.ConnectionError("Connection refused"))
    assert clock.pauses[:5] == [0.05, 0.1, 0.2, 0.4, 0.8] and max(clock.pauses) == 1.0
    assert 3.0 <= clock.now < 4.0
    assert "waiting for job j" in str(raised.value) and "Connection refused" in str(raised.value)


def test_recovery_resets_the_grace() -> None:
    clock = Clock()
    outage = Outage("w", grace_s=2.0, clock=clock, sleep=clock.sleep)
    for _ in range(20):  # 20 short outages, 40 s in all: none of them is long
        outage.failed(redis.TimeoutError("timed out"))
        outage.failed(redis.TimeoutError("timed out"))
        outage.recovered()
    assert clock.now > 2.0 and outage.failures == 0


class DroppedLinks:
    """A client whose blocking reads fail ``failures`` times, as a demoted master's do."""

    def __init__(self, real: redis.Redis, failures: int) -> None:
        self.real, self.failures = real, failures

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def execute_command(self, *args: object, **options: object) -> object:
        if args[0] == "BLMOVE" and self.failures > 0:
            self.failures -= 1
            raise redis.ConnectionError("Connection closed by server.")
        return self.real.execute_command(*args, **options)


@pytest.mark.timeout(60)
def test_a_wait_outlasts_more_dropped_links_than_redis_py_retries(redis_url: str) -> None:
    real = connect(redis_url)
    flaky = DroppedLinks(real, failures=11)
    jobs = Jobs(flaky, Keys(), ttl_s=600)  # type: ignore[arg-type]
    job = jobs.create(total=1)
    done: list[JobStatus] = []
    waiter = threading.Thread(target=lambda: done.append(jobs.wait(job, timeout=50)), daemon=True)
    waiter.start()
    wait_for(lambda: flaky.failures == 0, 30, "every dropped link")
    Jobs(real, Keys(), ttl_s=600).write_results([ItemResult(job, 0, {"label": 7, "error": None})])
    waiter.join(30)
    assert done and done[0].complete


@pytest.mark.timeout(60)
def test_a_wait_gives_up_when_redis_stays_away(redis_url: str) -> None:
    jobs = Jobs(DroppedLinks(connect(redis_url), failures=10**6), Keys(), ttl_s=600)  # type: ignore[arg-type]
    jobs.outage_grace_s = 1.0
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        jobs.wait(jobs.create(total=1), timeout=None)


@pytest.mark.timeout(60)
def test_a_wait_with_a_timeout_gives_up_at_its_timeout_when_it_never_saw_the_job() -> None:
    port = free_port()  # nothing listens there
    jobs = Jobs(connect(f"redis://127.0.0.1:{port}/0", check=False), Keys(), ttl_s=600)
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="waiting for job j"):
        jobs.wait("j", timeout=1.0)
    assert time.monotonic() - start < 20  # the timeout, not the 30 s grace (redis-py retries a few s)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_wait_survives_redis_being_killed_and_restarted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Every write fsynced, so the restarted server has the job back.
    durable = ("--dir", str(tmp_path), "--appendonly", "yes", "--appendfsync", "always")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    done: list[JobStatus] = []
    with redis_process(*durable, port=port) as (server, _):
        jobs = Jobs(connect(url), Keys(), ttl_s=600)
        job = jobs.create(total=1)
        waiter = threading.Thread(target=lambda: done.append(jobs.wait(job, timeout=100)), daemon=True)
        with caplog.at_level(logging.WARNING, logger="inkq.redis"):
            waiter.start()
            probe = connect(url)
            wait_for(lambda: any(c.get("cmd") == "blmove" for c in probe.client_list()), 30, "the waiter blocked")
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            wait_for(lambda: "Redis unreachable" in caplog.text, 60, "the waiter to notice the outage")
    assert waiter.is_alive() and not done
    with redis_process(*durable, port=port):
        Jobs(connect(url), Keys(), ttl_s=600).write_results([ItemResult(job, 0, {"label": 3, "error": None})])
        waiter.join(60)
    assert done and done[0].complete and done[0].done == 1
