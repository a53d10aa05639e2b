"""Each worker's sweeper thread: every INKQ_SWEEP_INTERVAL_S it tries a sweep (storage/sweeper.py)
under the sweep lock, paced so that however many workers run, about one sweep happens an interval.

What it requeued goes to the log and to the worker's running totals (``sweeps``,
``requeued_items``, ``requeued_messages``); when it last swept, and why its last sweep failed if
it did, to the worker's heartbeat (``swept_at``, ``sweep_error``). A failed sweep is retried at
the next interval: the sweeper holds no state a crash could lose.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from config.settings import Settings
from storage import queue, workers
from storage.jobs import Jobs
from storage.sweeper import Sweeper, SweepReport, sweep_locked

__all__ = ["SweepThread"]

log = logging.getLogger(__name__)


class SweepThread:
    def __init__(self, jobs: Jobs, settings: Settings, app: Any, hostname: str, health: dict[str, Any]) -> None:
        self.jobs = jobs
        self.settings = settings
        self.hostname = hostname
        self.health = health  # the replica's heartbeat reads swept_at and sweep_error from here
        self.sweeper = Sweeper(
            jobs, settings.queue, lambda job, items: queue.enqueue(app, job, items), settings.sweep_stall_s
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="inkq-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run_once(self) -> SweepReport | None:
        """One paced, locked sweep now; None when another worker's turn or sweep covers it."""
        report = sweep_locked(self.sweeper, self.settings.lock_ttl_s, pace_s=self.settings.sweep_interval_s)
        self.health.update(swept_at=time.time(), sweep_error=None)
        if report is not None:
            self._record(report)
        return report

    def _record(self, report: SweepReport) -> None:
        counts = {
            "sweeps": 1,
            "requeued_items": report.requeued_items,
            "requeued_messages": sum(r.messages for r in report.requeued),
        }
        workers.add_stats(self.jobs.redis, self.jobs.keys, self.hostname, counts)
        if report.requeued:
            log.warning("sweep requeued %d items of %d job(s)", report.requeued_items, len(report.requeued))

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_s):
            try:
                self.run_once()
            except Exception as exc:  # Redis away or a bug: the next interval tries again
                self.health["sweep_error"] = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("sweep failed; retrying in %.0fs", self.settings.sweep_interval_s, exc_info=True)
