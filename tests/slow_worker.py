"""A real inkq worker whose model can be made slow or hung, for the delivery tests only.

Run as `celery -A tests.slow_worker worker`. It is `worker.app` with two changes made here, in
the tests, so that production code carries no test hook: every model batch first waits for a
permit from the test's gate when ``INKQ_TEST_GATE`` is set (tests/gate.py), or blocks for ever
when ``INKQ_TEST_HANG`` is set; and every task start is recorded as "TASK_ID TIME" in the Redis
list ``INKQ_TEST_DELIVERIES`` (when set), so that a test can count deliveries on any version of
the worker.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any

from celery import signals

import worker.replica
from storage.connection import connect
from tests.gate import Gate
from worker.app import app, settings

__all__ = ["app"]

_serve = worker.replica.Replica._run
_never = threading.Event()


@functools.cache
def _gate(key: str) -> Gate:
    # A plain client, not storage.connection.connect: its socket timeout would cut the blocking pops short.
    return Gate(os.environ.get("INKQ_TEST_GATE_URL") or settings.redis_url, key)


def _gated_run(self: worker.replica.Replica, batch: list[Any]) -> list[Any]:
    if os.environ.get("INKQ_TEST_HANG"):
        _never.wait()
    if key := os.environ.get("INKQ_TEST_GATE"):
        _gate(key).pass_through(self.hostname)
    return _serve(self, batch)


worker.replica.Replica._run = _gated_run  # type: ignore[method-assign,assignment]
_deliveries = os.environ.get("INKQ_TEST_DELIVERIES")


def _count(task_id: str | None = None, **_: Any) -> None:
    if _deliveries:
        connect(settings.redis_url).rpush(_deliveries, f"{task_id} {time.time()}")


signals.task_prerun.connect(_count)
