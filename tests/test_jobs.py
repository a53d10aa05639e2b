"""Job lifecycle against a real Redis, no worker: manifest, interrupted and resumed submits,
cancel, waits that leave no key without a TTL, corrections by manifest, paged results."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from config import Settings
from config.errors import JobStateError
from producer.client import Client, QueueFullError
from storage import queue
from storage.jobs import ItemResult, JobState
from storage.utils import as_text
from tests.conftest import BIN, MnistArrays, wait_for, write_digits


def producer(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def body(index: int, digest: str = "d", error: str | None = None, review: bool = False) -> dict[str, Any]:
    return {"item": f"scan-{index}.png", "digest": digest, "label": 3, "error": error, "review": review}


def job_keys(client: redis.Redis, job: str) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=f"inkq:job:{job}*"))


def test_no_wait_on_a_full_queue_leaves_a_resumable_job(
    redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:5], mnist_test[1][:5])
    client = Client(Settings(redis_url=redis_url, chunk_size=1, queue_max_messages=2))
    seen: list[str] = []
    with pytest.raises(QueueFullError, match=r"run `producer submit --resume \w+`") as info:
        client.submit([str(tmp_path / "scans")], wait_for_room=False, started=lambda job, n: seen.append(job))
    (job,) = seen
    assert job in str(info.value)
    status = client.status(job)  # the lease is freed on the way out: interrupted at once
    assert (status.state, status.total, status.done) == (JobState.INTERRUPTED, 5, 0)
    assert client.wait(job, timeout=None).state is JobState.INTERRUPTED  # returns: never waits for ever
    roomy = Client(Settings(redis_url=redis_url, chunk_size=3, queue_max_messages=100))
    report = roomy.resume(job)
    assert (report.items, report.messages) == (5, 3)  # the job's own chunk size, only the missing chunks
    assert queue.depth(client.redis, client.settings) == 5  # each item's message exactly once
    assert client.status(job).state is JobState.QUEUED
    with pytest.raises(JobStateError, match="nothing to resume"):
        roomy.resume(job)


def test_resume_refuses_while_the_submitter_lives(redis_url: str, mnist_test: MnistArrays, tmp_path: Path) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:2], mnist_test[1][:2])
    client = Client(Settings(redis_url=redis_url, submit_lease_s=60))
    job = client.lifecycle.begin([(0, "a", "x.png")], 1, None, "live-submitter")
    with pytest.raises(JobStateError, match="being submitted by another process"):
        client.resume(job)
    assert client.status(job).state is JobState.SUBMITTING


def test_a_submitter_that_died_is_reported_not_waited_for(redis_url: str) -> None:
    client = Client(Settings(redis_url=redis_url, submit_lease_s=1))
    job = client.lifecycle.begin([(0, "a", "x.png"), (1, "b", "y.png")], 1, None, "a-submitter-that-died")
    assert client.status(job).state is JobState.SUBMITTING
    start = time.monotonic()
    status = client.wait(job)  # no timeout: it must still return
    assert status.state is JobState.INTERRUPTED and time.monotonic() - start < 5
    assert "producer submit --resume" in producer_status_hint(client, job)


def producer_status_hint(client: Client, job: str) -> str:
    from producer.jobcli import hint

    return hint(client.status(job))


def test_cancel_during_submit_stops_queueing(redis_url: str, mnist_test: MnistArrays, tmp_path: Path) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:4], mnist_test[1][:4])
    client = Client(Settings(redis_url=redis_url, chunk_size=1))

    def cancel_at_once(job: str, items: int) -> None:
        client.cancel(job)

    with pytest.raises(JobStateError, match="cancelled while it was being submitted"):
        client.submit([str(tmp_path / "scans")], started=cancel_at_once)
    assert queue.depth(client.redis, client.settings) == 0


def test_a_one_message_job_is_queued_in_a_few_round_trips(
    redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:2], mnist_test[1][:2])
    files = sorted(str(p) for p in (tmp_path / "scans").rglob("*.png"))
    client = Client(Settings(redis_url=redis_url))
    client.submit(files[:1])  # connections and scripts loaded
    client.redis.config_resetstat()
    job = client.submit(files[1:2]).job
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in client.redis.info("commandstats").items()}
    assert "lrange" not in calls  # the chunk is cut from the items in hand, not read back
    assert calls["multi"] == 1 and calls["evalsha"] == 1  # job and manifest in one; the end in one
    assert sum(calls.values()) <= 24, calls  # 28 before (and 4 more with task events on)
    status = client.status(job)
    assert (status.state, status.total) == (JobState.QUEUED, 1)
    assert not client.redis.exists(client.keys.job_lease(job))
    assert client.jobs.manifest.queued(job) == {0} and client.jobs.manifest.length(job) == 1
    assert queue.depth(client.redis, client.settings) == 2


def test_ending_a_submit_leaves_a_cancel_and_another_submitters_lease(redis_url: str) -> None:
    client = Client(Settings(redis_url=redis_url))
    life = client.lifecycle
    cancelled = life.begin([(0, "d" * 64, "a.png")], 1, None, "mine")
    life.cancel(cancelled)
    life.queued_last(cancelled, 0, "mine")
    assert client.status(cancelled).state is JobState.CANCELLED  # a cancel wins
    assert not client.redis.exists(client.keys.job_lease(cancelled))  # our own lease is freed
    taken = life.begin([(0, "d" * 64, "a.png")], 1, None, "mine")
    client.redis.set(client.keys.job_lease(taken), "theirs")  # another submitter took over
    life.queued_last(taken, 0, "mine")
    assert client.redis.get(client.keys.job_lease(taken)) == b"theirs"
    assert client.redis.hget(client.keys.job(taken), "state") == b"queued"


def test_cancelled_job_ignores_later_results(redis_url: str) -> None:
    client = Client(Settings(redis_url=redis_url))
    jobs = client.jobs
    job = client.lifecycle.begin([(i, f"d{i}", f"scan-{i}.png") for i in range(2500)], 10, None, "t")
    jobs.write_results([ItemResult(job, 7, body(7)), ItemResult(job, 9, body(9, error="bad"))])
    seen: list[Any] = []
    waiter = threading.Thread(target=lambda: seen.append(jobs.wait(job, timeout=30)))
    waiter.start()
    summary = client.cancel(job)
    waiter.join(10)
    assert seen and seen[0].complete and seen[0].state is JobState.CANCELLED  # the waiter woke
    assert (summary["state"], summary["cancelled_items"], summary["done"], summary["failed"]) == (
        "cancelled",
        2498,
        2500,
        2499,
    )
    # A worker that was mid-batch writes afterwards: nothing changes.
    jobs.write_results([ItemResult(job, i, body(i)) for i in (0, 7, 9, 2499)])
    after = jobs.status(job)
    assert (after.state, after.done, after.failed) == (JobState.CANCELLED, 2500, 2499)
    assert jobs.result(job, 7) == body(7) and jobs.result(job, 0)["error"].startswith("cancelled")  # type: ignore[index]
    assert jobs.result(job, 0)["item"] == "scan-0.png"  # type: ignore[index]
    assert client.cancel(job)["cancelled_items"] == 0  # repeating is harmless
    assert jobs.status(job).done == 2500


def test_a_job_leaves_the_sweepers_index_as_it_finishes(redis_url: str) -> None:
    """The sweeper walks the jobs still running, not every job of its interval: walking 6,000
    finished ones stalled a worker under 200 jobs/s (BENCHMARKS.md, "Latest figures")."""
    client = Client(Settings(redis_url=redis_url))
    jobs, keys = client.jobs, client.keys

    def indexed() -> set[str]:
        return {as_text(m) for m in jobs.redis.zrange(keys.jobs_active, 0, -1)}

    items = [(i, f"d{i}", f"s{i}.png") for i in range(2)]
    done, cancelled = (client.lifecycle.begin(items, 1, None, "t") for _ in "ab")
    assert {done, cancelled} <= indexed()
    jobs.write_results([ItemResult(done, 0, body(0))])
    assert done in indexed(), "half done is still running"
    jobs.write_results([ItemResult(done, 1, body(1, error="bad")), ItemResult(done, 1, body(1))])
    assert done not in indexed() and jobs.status(done).complete
    client.cancel(cancelled)
    assert indexed().isdisjoint({done, cancelled})


def test_cancel_of_a_complete_job_changes_nothing(redis_url: str) -> None:
    client = Client(Settings(redis_url=redis_url))
    job = client.jobs.create(1)
    client.jobs.write_results([ItemResult(job, 0, body(0))])
    summary = client.cancel(job)
    assert summary["was_complete"] and summary["state"] == "complete"


def test_waiting_leaves_every_key_with_a_ttl(redis_url: str, mnist_test: MnistArrays, tmp_path: Path) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:3], mnist_test[1][:3])
    client = Client(Settings(redis_url=redis_url, result_ttl_s=3600))
    job = client.submit([str(tmp_path / "scans")]).job
    stale = f"{'0' * 32}:0"  # a review mark whose job expired long ago
    client.redis.zadd("inkq:review", {stale: time.time() - 7200})
    waiters = [threading.Thread(target=client.jobs.wait, args=(job, 30)) for _ in range(3)]
    for w in waiters:
        w.start()
    client.jobs.write_results([ItemResult(job, i, body(i, review=True)) for i in range(3)])
    for w in waiters:
        w.join(10)
        assert not w.is_alive()
    for _ in range(3):  # each later wait sees the finished token too
        assert client.wait(job, timeout=5).complete
    keys = job_keys(client.redis, job)
    assert f"inkq:job:{job}:finished" in keys
    assert {k: client.redis.ttl(k) for k in keys if client.redis.ttl(k) <= 0} == {}
    assert client.redis.ttl("inkq:review") > 0
    assert stale.encode() not in client.redis.zrange("inkq:review", 0, -1)  # trimmed on write


def test_correction_addresses_items_through_the_manifest(
    env: dict[str, str], redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    truth = write_digits(tmp_path / "scans", mnist_test[0][:4], mnist_test[1][:4])
    paths = sorted(truth)
    digest = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
    client = Client(Settings(redis_url=redis_url))
    job = client.submit([str(tmp_path / "scans")]).job
    # Results arrive out of order and item 2 has none yet.
    client.jobs.write_results([ItemResult(job, i, body(i, digest[paths[i]]) | {"item": paths[i]}) for i in (3, 1)])
    assert client.correct(job, "1", "5")["item"] == paths[1]
    unread = client.correct(job, "2", "6")
    assert (unread["item"], unread["was"]) == (paths[2], None)
    run = producer(env, "label", "--job", job, "--item", paths[0], "7", "--json")
    assert run.returncode == 0, run.stderr
    labelled = {s.digest: s.label for s in client.labels.all()}
    assert labelled == {digest[paths[1]]: 5, digest[paths[2]]: 6, digest[paths[0]]: 7}
    missing = producer(env, "label", "--job", job, "--item", "4", "3")
    assert missing.returncode == 1 and "no result for item '4'" in missing.stderr


def test_results_are_read_in_pages(env: dict[str, str], redis_url: str) -> None:
    client = Client(Settings(redis_url=redis_url))
    total = 3000
    job = client.lifecycle.begin([(i, f"d{i}", f"scan-{i}.png") for i in range(total)], 100, None, "t")
    client.lifecycle.submitted(job, "t")
    order = list(range(total))
    order = order[1::2] + order[::2]  # written out of order
    order.remove(1234)  # and one item has no result yet
    for start in range(0, len(order), 500):
        client.jobs.write_results([ItemResult(job, i, body(i)) for i in order[start : start + 500]])
    client.redis.config_resetstat()
    run = producer(env, "results", job)
    assert run.returncode == 0, run.stderr
    items = [json.loads(line)["item"] for line in run.stdout.splitlines()]
    assert items == [f"scan-{i}.png" for i in range(total) if i != 1234]
    stats = client.redis.info("commandstats")
    assert "cmdstat_hgetall" not in stats, stats.get("cmdstat_hgetall")
    assert stats["cmdstat_hmget"]["calls"] >= 3  # one page of 1,000 indices per call


def test_ctrl_c_during_submit_names_the_job_to_resume(
    env: dict[str, str], redis_url: str, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    write_digits(tmp_path / "scans", mnist_test[0][:6], mnist_test[1][:6])
    client = Client(Settings(redis_url=redis_url))
    full = env | {"INKQ_CHUNK_SIZE": "1", "INKQ_QUEUE_MAX_MESSAGES": "2"}  # no worker: it waits for room
    # A submit that does not exit is aborted so that faulthandler prints where it was stuck.
    full |= {"PYTHONFAULTHANDLER": "1"}
    # Python turns SIGINT into KeyboardInterrupt only in a process that starts with its default
    # action, and a suite run as a background job inherits it ignored (as a terminal's Ctrl-C
    # never finds it). A handler here, unlike "ignore", is reset to the default by exec.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        submitter = subprocess.Popen(
            [str(BIN / "producer"), "submit", str(tmp_path / "scans")], env=full, stderr=subprocess.PIPE, text=True
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        wait_for(lambda: queue.depth(client.redis, client.settings) == 2, 30, "two queued messages")
        submitter.send_signal(signal.SIGINT)
        try:
            _, err = submitter.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            submitter.send_signal(signal.SIGABRT)
            pytest.fail(f"producer submit did not exit within 30 s of Ctrl-C:\n{submitter.communicate(timeout=10)[1]}")
    finally:
        submitter.kill()
    job = re.findall(r"job (\w+): submitting 6 items", err)[0]
    assert submitter.returncode == 130 and f"run `producer submit --resume {job}`" in err, err
    assert "Traceback" not in err
    assert client.status(job).state is JobState.INTERRUPTED  # at once: the lease was freed on the way out
