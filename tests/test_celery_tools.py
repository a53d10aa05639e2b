"""Celery's own tools keep working on inkq's app: `celery -A worker inspect ping` answers, and task
events (what Flower shows tasks from) flow from producer and worker unless INKQ_TASK_EVENTS=false."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bench.synth import WorkerProcess, write_digits
from config.settings import Settings, load_settings
from producer.client import Client
from storage.connection import connect
from storage.queue import make_app
from tests.conftest import MnistArrays, wait_for
from tests.redis_servers import publish_untrained

TASK_EVENTS = {"task-sent", "task-received", "task-started", "task-succeeded"}


def test_task_events_follow_the_setting() -> None:
    off = make_app(Settings()).conf  # off by default: they cost a small job about 1 ms of CPU
    assert off.worker_send_task_events is False and off.task_send_sent_event is False
    on = make_app(load_settings({"INKQ_TASK_EVENTS": "true"})).conf
    assert on.worker_send_task_events is True and on.task_send_sent_event is True


class EventLog:
    """Every Celery event on the app's broker, captured on a thread like Flower's receiver."""

    def __init__(self, settings: Settings) -> None:
        self.events: list[dict[str, Any]] = []
        self._app = make_app(settings)
        self._connection = self._app.connection_for_read()
        self._receiver = self._app.events.Receiver(self._connection, handlers={"*": self.events.append})
        self._thread = threading.Thread(target=self._receiver.capture, kwargs={"wakeup": False}, daemon=True)
        self._thread.start()

    def types(self, uuid: str) -> set[str]:
        return {e["type"] for e in list(self.events) if e.get("uuid") == uuid}

    def close(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)
        self._connection.release()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_inspect_ping_answers_and_task_events_reach_a_receiver(
    env: dict[str, str], redis_url: str, tmp_path: Path, mnist_test: MnistArrays
) -> None:
    publish_untrained(connect(redis_url))
    env = env | {"INKQ_TASK_EVENTS": "true"}  # off by default
    worker = WorkerProcess(env, "tools", tmp_path / "worker.log", {"compile": "false", "precision": "fp32"})
    try:
        ping = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "worker", "inspect", "ping", "-d", worker.name, "--timeout", "10"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr

        settings = load_settings(env)
        events = EventLog(settings)
        try:
            # The receiver is listening once the worker's heartbeat (every 2 s) reaches it.
            wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in list(events.events)), 30, "a heartbeat")
            images, labels = mnist_test
            write_digits(tmp_path / "scans", images[:3], labels[:3])
            client = Client(settings)
            job = client.submit([str(tmp_path / "scans")]).job
            client.wait(job, timeout=60)
            task = next(e["uuid"] for e in list(events.events) if e["type"] == "task-sent")
            wait_for(lambda: events.types(task) >= TASK_EVENTS, 30, f"the task events of {task}")
            sizes = [len(json.dumps(e)) for e in list(events.events) if e["type"] in TASK_EVENTS]
            assert max(sizes) < 2048, "INKQ_TASK_EVENTS documents events under 2 KB"
        finally:
            events.close()
    finally:
        worker.stop()
