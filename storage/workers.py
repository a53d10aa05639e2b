"""Worker heartbeats: what each worker says about itself, written and read only through here.

A worker writes its ``WorkerState`` every few seconds under ``Keys.worker(hostname)`` (JSON, with
a TTL of a few heartbeats, so a dead worker's state disappears) and records the time in
``Keys.workers_index`` so that operators and tests can list workers without scanning keys.
Fields this module does not know (added by newer workers) are kept in ``extra`` and written
back unchanged. Nothing secret belongs here: no URLs, no passwords.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from storage.keys import Keys
from storage.utils import as_text

__all__ = ["WorkerState", "add_stats", "announce_ready", "list_workers", "read", "remove", "write"]

# The index outlives any one worker; a worker missing from it for this long is forgotten.
INDEX_TTL_S = 24 * 3600
# A worker's running totals are kept this long after its last message.
STATS_TTL_S = 24 * 3600


@dataclass
class WorkerState:
    hostname: str
    pid: int = 0
    version: str | None = None  # the model version it serves
    engine: str = ""  # how it runs the model (device, precision, compiled or eager)
    warm_s: float = 0.0
    ready: bool = False  # model loaded and warmed, consuming messages
    healthy: bool = True  # false while its model has completed no batch for INKQ_STALL_TIMEOUT_S
    stalled_s: float = 0.0  # seconds since its last batch while images wait (0 when idle)
    last_batch_at: float | None = None  # wall-clock time of its last completed batch
    items_served: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # versions it would not switch to, and why
    compile_fallback: str | None = None  # why torch.compile failed, when it serves eager instead
    engine_source: str = ""  # aot (loaded AOT packages), compiled (torch.compile) or eager
    # Its background build of AOT packages (building, built or failed) or, after a start from
    # them, its compile beside them (compiling, switched ..., kept ..., failed: worker/upgrade.py).
    packages: str | None = None
    preprocess_workers: int = 0  # processes preparing its batches (0: the model's thread)
    swept_at: float | None = None  # when its sweeper thread last ran: swept, or found another worker's sweep
    sweep_error: str | None = None  # why its last sweep failed (None when it worked)
    metrics_port: int | None = None  # where it serves /metrics and /healthz (None: INKQ_METRICS_PORT=0, off)
    at: float = 0.0  # when this state was written
    extra: dict[str, Any] = field(default_factory=dict)  # fields written by newer workers

    def as_dict(self) -> dict[str, Any]:
        known = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return self.extra | known

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerState:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


def write(client: redis.Redis, keys: Keys, state: WorkerState, ttl_s: float) -> None:
    """Store ``state`` (stamped with the current time) for ``ttl_s`` seconds."""
    state.at = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.worker(state.hostname), json.dumps(state.as_dict(), default=str), ex=max(1, int(ttl_s)))
    pipe.zadd(keys.workers_index, {state.hostname: state.at})
    pipe.expire(keys.workers_index, INDEX_TTL_S)
    pipe.execute()


def announce_ready(client: redis.Redis, keys: Keys, hostname: str) -> None:
    """Push ``hostname`` onto the list of workers that became ready (the last 100, for a day):
    what launchers and tests block on instead of polling heartbeats."""
    pipe = client.pipeline(transaction=True)
    pipe.rpush(keys.workers_ready, hostname)
    pipe.ltrim(keys.workers_ready, -100, -1)
    pipe.expire(keys.workers_ready, INDEX_TTL_S)
    pipe.execute()


def read(client: redis.Redis, keys: Keys, hostname: str) -> WorkerState | None:
    """The worker's last state, or None when it has not written one within its TTL."""
    raw = client.get(keys.worker(hostname))
    return None if raw is None else WorkerState.from_dict(json.loads(raw))


def remove(client: redis.Redis, keys: Keys, hostname: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete(keys.worker(hostname))
    pipe.zrem(keys.workers_index, hostname)
    pipe.execute()


def list_workers(client: redis.Redis, keys: Keys) -> list[WorkerState]:
    """Every worker with a live heartbeat, by hostname; forgets those whose state expired."""
    names = sorted(as_text(n) for n in client.zrange(keys.workers_index, 0, -1))
    if not names:
        return []
    raws = client.mget([keys.worker(n) for n in names])
    gone = [n for n, raw in zip(names, raws, strict=True) if raw is None]
    if gone:
        client.zrem(keys.workers_index, *gone)
    return [WorkerState.from_dict(json.loads(raw)) for raw in raws if raw is not None]


def add_stats(
    client: redis.Redis, keys: Keys, hostname: str, counts: dict[str, int], millis: dict[str, float] | None = None
) -> None:
    """Add to a worker's running totals (messages, items, milliseconds per stage): where does the
    time go, for operators and the benchmarks."""
    key = keys.worker_stats(hostname)
    pipe = client.pipeline(transaction=False)
    for name, n in counts.items():
        pipe.hincrby(key, name, n)
    for name, ms in (millis or {}).items():
        pipe.hincrbyfloat(key, name, ms)
    pipe.expire(key, STATS_TTL_S)
    pipe.execute()
