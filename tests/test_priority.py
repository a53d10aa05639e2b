"""Priorities: messages land on kombu's priority lists, aging moves the oldest lower one up, the
batcher serves high ranks first without starving low, and a real worker serves a high job ahead
of a queued low one and still finishes the low one."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import yaml

from bench.synth import WorkerProcess, write_digits
from config.settings import Settings, load_settings
from producer.client import Client
from storage.connection import connect
from storage.keys import Keys
from storage.priority import Priority, age, lists, of_step
from storage.queue import enqueue, make_app
from storage.utils import as_text
from tests.conftest import MnistArrays, wait_for
from tests.gate import Gate
from tests.redis_servers import publish_untrained
from worker.batcher import Batcher


def test_each_priority_has_a_step_and_back() -> None:
    assert [of_step(s) for s in (None, 0, 3, 6, 9)] == ["high", "high", "normal", "low", "low"]
    assert [p.rank for p in Priority] == [0, 1, 2]


def test_messages_land_on_their_priority_list_and_aging_moves_the_oldest_up(redis_url: str) -> None:
    settings = load_settings({"INKQ_REDIS_URL": redis_url})
    app, client, keys = make_app(settings), connect(redis_url), Keys()
    for n, p in enumerate([Priority.LOW, Priority.LOW, Priority.NORMAL, Priority.HIGH]):
        enqueue(app, f"job{n}", [[0, "d", "p"]], p)
    high, normal, low = lists(keys, settings.queue)
    assert [client.llen(k) for k in (high, normal, low)] == [1, 1, 2]
    assert age(client, keys, settings.queue, 60) == 2  # normal -> high, then low -> normal
    assert age(client, keys, settings.queue, 60) == -1  # within the interval: another worker's turn
    assert [client.llen(k) for k in (high, normal, low)] == [2, 1, 1]
    # The oldest low message (job0) moved to the end kombu pops next.
    assert "job0" in as_text(client.lindex(normal, -1)) and "job2" in as_text(client.lindex(high, -1))


def test_the_batcher_serves_high_ranks_first_and_keeps_a_share_for_lower_ones() -> None:
    gate = threading.Event()
    batches: list[list[str]] = []

    def run(values: list[str]) -> list[str]:
        gate.wait(10)
        batches.append(values)
        return values

    batcher: Batcher[str, str] = Batcher(run, max_batch=4, max_wait_s=0.0)
    try:
        first = batcher.submit(["busy"])  # holds the model while the rest queue up
        wait_for(lambda: batcher.oldest_wait_s() == 0 and batcher.stalled_for() > 0, 5, "the first batch")
        low = batcher.submit([f"low{i}" for i in range(4)], rank=2)
        normal = batcher.submit(["normal0"], rank=1)
        high = batcher.submit([f"high{i}" for i in range(8)], rank=0)
        gate.set()
        batcher.gather(first + low + normal + high, 10)
        # A quarter of each batch (here one image) for each lower rank that waits, the rest by rank.
        assert batches[1:] == [
            ["normal0", "low0", "high0", "high1"],
            ["low1", "high2", "high3", "high4"],
            ["high5", "high6", "high7"],  # fewer than a batch: an express batch
            ["low2", "low3"],
        ]

        # A few high images beside lower ones go alone, but never two such batches in a row.
        gate.clear()
        batches.clear()
        busy = batcher.submit(["busy"])
        wait_for(lambda: batcher.oldest_wait_s() == 0 and batcher.stalled_for() > 0, 5, "the first batch")
        low = batcher.submit([f"low{i}" for i in range(6)], rank=2)
        high = batcher.submit(["high0"], rank=0)
        gate.set()
        batcher.gather(busy + low + high, 10)
        assert batches[1:] == [["high0"], ["low0", "low1", "low2", "low3"], ["low4", "low5"]]
    finally:
        batcher.stop()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_worker_serves_a_high_job_before_a_queued_low_one_and_finishes_both(
    env: dict[str, str], redis_url: str, tmp_path: Path, mnist_test: MnistArrays
) -> None:
    publish_untrained(connect(redis_url))
    gate = Gate(redis_url)
    worker = WorkerProcess(
        env | gate.env(),
        "priorities",
        tmp_path / "worker.log",
        {"compile": "false", "precision": "fp32", "worker_threads": "1", "prefetch_multiplier": "1", "max_batch": "8"},
        app="tests.slow_worker",
    )
    try:
        images, labels = mnist_test
        write_digits(tmp_path / "bulk", images[:240], labels[:240])
        write_digits(tmp_path / "urgent", images[240:241], labels[240:241])
        settings = load_settings(env | {"INKQ_CHUNK_SIZE": "8"})
        low = Client(settings, priority="low")
        bulk = low.submit([str(tmp_path / "bulk")]).job
        wait_for(lambda: gate.held() > 0, 60, "the bulk job's first batch at the gate")
        urgent_client = Client(settings, priority=Priority.HIGH)
        urgent = urgent_client.submit([str(tmp_path / "urgent")]).job
        # The bulk job's 29 other messages were queued first; the worker holds one at a time.
        gate.open()
        done = urgent_client.wait(urgent, timeout=60)
        finished = low.wait(bulk, timeout=120)
        assert finished.done == 240 and done.complete
        assert (done.finished or 0) < (finished.finished or 0), "the high job waited for the low one"
    finally:
        worker.stop()


def test_aging_is_off_at_zero_and_the_client_rejects_an_unknown_priority() -> None:
    assert Settings(priority_aging_s=0).priority_aging_s == 0
    with pytest.raises(ValueError, match="urgent"):
        Priority("urgent")


def test_the_readme_keda_triggers_name_every_priority_list() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n(apiVersion: keda\.sh.*?)```", readme, re.S)
    assert block is not None
    triggers = yaml.safe_load(block.group(1))["spec"]["triggers"]
    assert [t["metadata"]["listName"] for t in triggers] == lists(Keys(), Settings().queue)
