"""`trainer watch`: retrain whenever enough new labels arrived, or any after an interval."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from config.errors import LockLostError, RegistryConflictError
from config.settings import Settings
from storage.labels import Labels
from storage.lock import LockHeldError
from storage.registry import Registry
from trainer.metrics import TrainerMetrics
from trainer.retrain import retrain

__all__ = ["due", "watch"]

log = logging.getLogger(__name__)


def due(settings: Settings, labels: Labels, last_run: float | None, now: float) -> tuple[bool, str]:
    """Whether `trainer watch` should retrain now, and why (or why not)."""
    waiting = labels.latest_seq() - labels.watermark("tried")
    if waiting <= 0:
        return False, "no new labels"
    if waiting >= settings.watch_min_labels:
        return True, f"{waiting} new labels (>= {settings.watch_min_labels})"
    if last_run is None or now - last_run >= settings.watch_interval_s:
        return True, f"{waiting} new labels and {settings.watch_interval_s}s since the last run"
    return False, f"{waiting} new labels; waiting for {settings.watch_min_labels} or the interval"


def watch(
    settings: Settings,
    registry: Registry,
    labels: Labels,
    *,
    once: bool,
    poll_s: float,
    stop: threading.Event | None = None,
    metrics: TrainerMetrics | None = None,
) -> list[dict[str, Any]]:
    """Retrain whenever it is due; with ``once``, check one time and return."""
    stop = stop or threading.Event()
    metrics = metrics or TrainerMetrics()
    runs: list[dict[str, Any]] = []
    last_key = registry.keys.retrain_last
    while True:
        raw = registry.redis.get(last_key)
        go, why = due(settings, labels, float(raw) if raw else None, time.time())
        if go:
            log.info("retraining: %s", why)
            metrics.running()
            try:
                outcome = retrain(settings, registry, labels)
                registry.redis.set(last_key, time.time())
            except LockHeldError as exc:
                outcome = {"skipped": True, "reason": str(exc)}
            except (LockLostError, RegistryConflictError) as exc:  # fenced: nothing published; next run retries
                log.error("retrain not published: %s", exc)
                outcome = {"skipped": True, "reason": str(exc)}
            runs.append(outcome)
            metrics.ran(outcome)
        elif once:
            runs.append({"skipped": True, "reason": why})
        metrics.checked(labels)
        if once or stop.wait(poll_s):
            return runs
