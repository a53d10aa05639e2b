"""The Celery application that `celery -A worker worker` runs.

The worker process loads the current model once, compiles and warms every bucket in
``worker_init`` (before it consumes anything), and only then reports ready. Tasks run on a
thread pool inside that one process so that their images share the model's batches.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, signals
from celery.exceptions import Reject

from config.errors import UnsafeStoreError
from config.settings import load_settings
from storage.connection import connect
from storage.queue import TASK_NAME, make_app
from storage.redis_checks import check_store
from worker.replica import Replica

log = logging.getLogger("worker")

settings = load_settings()
app = make_app(settings)
_replica: Replica | None = None


def replica() -> Replica:
    global _replica  # noqa: PLW0603 - one model replica per process, built once
    if _replica is None:
        _replica = Replica(settings)
    return _replica


@signals.worker_init.connect
def _load_model(**_: Any) -> None:
    logging.getLogger().setLevel(settings.log_level.upper())
    try:
        check_store(connect(settings), settings, "worker")
    except UnsafeStoreError as exc:
        log.critical("%s", exc)
        raise SystemExit(1) from exc  # Celery only logs ordinary exceptions raised by signal handlers
    replica()


@signals.worker_ready.connect
def _announce(sender: Any = None, **_: Any) -> None:
    replica().announce(getattr(sender, "hostname", "") or replica().hostname)
    log.info("worker %s ready", replica().hostname)


@signals.worker_shutdown.connect
def _close(**_: Any) -> None:
    if _replica is not None:
        _replica.close()


@app.task(name=TASK_NAME, bind=True)
def recognize(self: Task, job: str, items: list[list[Any]], sent_at: float | None = None) -> int:
    """Recognise one message's items and write their results; acknowledged only after that."""
    try:
        return replica().handle(job, items, sent_at or time.time(), worker=self.request.hostname or "")
    except Exception as exc:
        # Not an image's fault (those become per-item errors): Redis or the model failed. Put
        # the message back rather than drop it; a short pause keeps a broken worker from spinning.
        log.exception("message for job %s failed; requeueing it", job)
        time.sleep(1.0)
        raise Reject(f"{type(exc).__name__}: {exc}", requeue=True) from exc
