"""The test's side of a gated model (tests/slow_worker.py): batches wait until the test lets them run.

A worker started with ``Gate.env()`` takes one permit from the gate's Redis list before every
model batch, and first says so in the ``waiting`` list with its name. A test holds work in
flight for exactly as long as it needs to (a failover, a second worker taking part, a message
outliving its visibility timeout) and synchronises on those records instead of on a model slowed
by a guessed amount of time.
"""

from __future__ import annotations

import time

import redis

from storage.utils import as_text

__all__ = ["GATE_TIMEOUT_S", "Gate"]

# A batch waits at most this long for a permit, then fails its items: a test that forgets to open
# the gate ends in failed results, not in a worker hung for ever.
GATE_TIMEOUT_S = 120.0


class Gate:
    def __init__(self, url: str, key: str = "inkq-test:gate") -> None:
        self.url = url
        self.key = key
        self.redis = redis.Redis.from_url(url)

    @property
    def waiting_key(self) -> str:
        return f"{self.key}:waiting"

    @property
    def taken_key(self) -> str:
        return f"{self.key}:taken"

    def pass_through(self, worker: str) -> None:
        """The worker's side: record the arrival, then block until a permit is given (or fail)."""
        self.redis.rpush(self.waiting_key, worker)
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while self.redis.blpop([self.key], timeout=1) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test opened no gate for this batch in {GATE_TIMEOUT_S:g}s")
        self.redis.incr(self.taken_key)

    def env(self) -> dict[str, str]:
        """The variables that gate a `tests.slow_worker` worker's batches."""
        return {"INKQ_TEST_GATE": self.key, "INKQ_TEST_GATE_URL": self.url}

    def allow(self, batches: int = 1) -> None:
        """Let ``batches`` more batches run, whichever workers take them."""
        self.redis.rpush(self.key, *["go"] * batches)

    def open(self) -> None:
        """Let every batch run from now on (more permits than any test has batches)."""
        self.allow(100_000)

    def arrivals(self) -> list[str]:
        """The worker of every batch that reached the gate, in order of arrival."""
        return [as_text(name) for name in self.redis.lrange(self.waiting_key, 0, -1)]

    def held(self) -> int:
        """Batches that reached the gate and have not taken a permit yet."""
        return len(self.arrivals()) - self.taken()

    def taken(self) -> int:
        return int(self.redis.get(self.taken_key) or 0)
