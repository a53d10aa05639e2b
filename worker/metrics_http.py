"""A worker's HTTP endpoint: config/metrics_http.py's ``/metrics`` and ``/healthz``, with the
worker's own health rule: 200 when its model is loaded, warm and not stalled and Redis took its
last heartbeats, 503 otherwise."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from config.metrics_http import Health, MetricsServer, check, metrics_app, serve

if TYPE_CHECKING:
    from worker.replica import Replica

__all__ = ["REDIS_SILENT_S", "Health", "MetricsServer", "check", "metrics_app", "replica_health", "serve"]

# /healthz fails once Redis has refused this many heartbeats in a row: read from the heartbeat's
# last success, so a probe never waits on a Redis timeout itself.
REDIS_SILENT_S = 15.0  # three of worker/replica.py's HEARTBEAT_S


def replica_health(replica: Replica | None) -> tuple[bool, str]:
    """Healthy when the model is loaded and warm (the replica exists), has not stalled, and Redis
    took the worker's last heartbeats."""
    if replica is None:
        return False, "model loading and warming"
    silent = time.monotonic() - replica.last_beat_ok
    if silent > REDIS_SILENT_S:
        return False, f"Redis unreachable: no heartbeat written for {silent:.0f}s"
    stalled = replica.batcher.stalled_for()
    if stalled > replica.settings.stall_timeout_s:
        return False, f"model stalled: no batch completed for {stalled:.0f}s while images wait (INKQ_STALL_TIMEOUT_S)"
    return True, f"serving model {replica.engine.version}"
