"""The whole system at a glance, read from Redis: for `producer health` (people) and `producer
probe` (exit codes for compose, Kubernetes and systemd).

A worker is *ready* when its model is loaded and warm and it consumes messages, and *healthy*
while its model completes batches (it is not, when images have waited INKQ_STALL_TIMEOUT_S for a
batch). Both come from its heartbeat (storage/workers.py), written every few seconds and expiring
after three missed beats: a worker that died, or lost Redis, drops out on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from storage import broker, workers
from storage.deadletters import DeadLetters
from storage.jobs import JobState
from storage.keys import Keys
from storage.registry import Registry
from storage.utils import as_text

__all__ = ["Snapshot", "probe", "snapshot"]

# Jobs listed in a snapshot, newest first, and how many of the newest indexed jobs are looked at:
# a health view, not an inventory (the index keeps finished jobs until a sweep drops them).
JOBS_SHOWN = 20
JOBS_READ = 1000


@dataclass
class Snapshot:
    queue: dict[str, int]
    workers: list[dict[str, Any]]
    current_model: str | None
    jobs_in_progress: list[dict[str, Any]] = field(default_factory=list)
    jobs_in_progress_total: int = 0
    dead_letters: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def snapshot(client: redis.Redis, keys: Keys, queue: str, dead_letter_ttl_s: int) -> Snapshot:
    now = time.time()
    states = workers.list_workers(client, keys)
    rows = [
        {
            "name": w.hostname,
            "ready": w.ready,
            "healthy": w.healthy,
            "version": w.version,
            "engine": w.engine,
            "items_served": w.items_served,
            "last_batch_s_ago": None if w.last_batch_at is None else round(now - w.last_batch_at, 1),
            "heartbeat_s_ago": round(now - w.at, 1),
            "metrics_port": w.metrics_port,
        }
        for w in states
    ]
    progress = _in_progress(client, keys)
    return Snapshot(
        queue=broker.depth(client, keys, queue),
        workers=rows,
        current_model=Registry(client, keys).current(),
        jobs_in_progress=progress[:JOBS_SHOWN],
        jobs_in_progress_total=len(progress),
        dead_letters=DeadLetters(client, keys, dead_letter_ttl_s).count(),
    )


def _in_progress(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Unfinished jobs among the newest JOBS_READ of the index, newest first, in one round trip."""
    names = [as_text(j) for j in client.zrevrange(keys.jobs_active, 0, JOBS_READ - 1)]
    pipe = client.pipeline(transaction=False)
    for job in names:
        pipe.hmget(keys.job(job), ["total", "done", "failed", "state"])
    out = []
    for job, (total, done, failed, state) in zip(names, pipe.execute(), strict=True):
        if total is None or int(done or 0) >= int(total) or as_text(state or b"") == JobState.CANCELLED:
            continue
        out.append({"job": job, "total": int(total), "done": int(done or 0), "failed": int(failed or 0)})
    return out


def probe(client: redis.Redis, keys: Keys, name: str, max_age_s: float) -> str | None:
    """None when worker ``name`` is ready and healthy with a heartbeat younger than ``max_age_s``;
    else why not, in words. Raises redis errors (Redis unreachable is a failed probe too)."""
    state = workers.read(client, keys, name)
    if state is None:
        return f"no heartbeat from worker {name!r}: not started, dead, or cut off from Redis"
    age = time.time() - state.at
    if age > max_age_s:
        return f"worker {name!r}: last heartbeat {age:.0f}s ago (more than {max_age_s:g}s)"
    if not state.ready:
        return f"worker {name!r} is not ready: its model is still loading or warming"
    if not state.healthy:
        return f"worker {name!r} is unhealthy: its model has completed no batch for {state.stalled_s:.0f}s"
    return None
