"""The Celery application that `celery -A worker worker` runs.

The worker process loads the current model once, compiles and warms every bucket in
``worker_init`` (before it consumes anything), and only then reports ready. Tasks run on a
thread pool inside that one process so that their images share the model's batches.

Every failure ends (worker/delivery.py has the policy): each delivery of a message is counted in
Redis before any work; a failed delivery is retried with exponential backoff, and the delivery
that reaches INKQ_MAX_DELIVERIES (or any beyond it, after a worker died holding the message)
dead-letters the message and writes an error result for each of its items, so its job completes.
A worker whose model stalls releases its messages to other workers without processing them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Task, signals
from celery.exceptions import Reject, Retry

from config.errors import ConfigError, ModelStalledError, UnsafeStoreError
from config.logs import apply_format, configure
from config.settings import load_settings
from storage import workers
from storage.connection import connect
from storage.deadletters import DeadLetter, DeadLetters
from storage.priority import Priority, of_step
from storage.queue import TASK_NAME, make_app
from storage.redis_checks import check_store
from worker import delivery, metrics_http
from worker.aging import AgingThread
from worker.delivery import Action
from worker.metrics import WorkerMetrics
from worker.replica import Replica
from worker.sweeping import SweepThread
from worker.visibility import VisibilityKeeper, held_delivery_tags

log = logging.getLogger("worker")

settings = load_settings()
app = make_app(settings)
_replica: Replica | None = None
_keeper: VisibilityKeeper | None = None
_sweeper: SweepThread | None = None
_aging: AgingThread | None = None
_metrics = WorkerMetrics()
_metrics_server: metrics_http.MetricsServer | None = None
# A pause before a message goes back to the queue, so that a broken worker does not spin on it.
RELEASE_PAUSE_S = 1.0


def replica() -> Replica:
    global _replica  # noqa: PLW0603 - one model replica per process, built once
    if _replica is None:
        _replica = Replica(settings, _metrics)
    return _replica


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    """Celery's task logger has a handler of Celery's making: give it (and the root logger's, in
    case Celery made that too) INKQ_LOG_FORMAT, so every log line of the worker has one format."""
    apply_format(logger, settings.log_format)


@signals.worker_init.connect
def _load_model(**_: Any) -> None:
    # Before Celery sets up logging (it then leaves a configured root logger be): the checks below
    # log in INKQ_LOG_FORMAT too.
    configure(settings)
    logging.getLogger().setLevel(settings.log_level.upper())
    global _metrics_server  # noqa: PLW0603 - one endpoint per process
    try:
        metrics_http.check(settings)
        check_store(connect(settings), settings, "worker")
        # Up before the model loads, so that /healthz says "loading" rather than nothing.
        _metrics_server = metrics_http.serve(settings, _metrics.registry, lambda: metrics_http.replica_health(_replica))
    except (ConfigError, UnsafeStoreError) as exc:
        log.critical("%s", exc)
        raise SystemExit(1) from exc  # Celery only logs ordinary exceptions raised by signal handlers
    replica().metrics_port = _metrics_server.port if _metrics_server else None


@signals.worker_ready.connect
def _announce(sender: Any = None, **_: Any) -> None:
    global _keeper, _sweeper, _aging  # noqa: PLW0603 - one keeper, sweeper and aging thread per process
    r = replica()
    _keeper = VisibilityKeeper(r.redis, r.keys.broker_unacked_index, settings.visibility_timeout_s, held_delivery_tags)
    _keeper.start()
    r.announce(getattr(sender, "hostname", "") or r.hostname)
    # Finds jobs whose message was lost with a killed worker (storage/sweeper.py) and requeues their items.
    _sweeper = SweepThread(r.jobs, settings, app, r.hostname, r.sweep_health)
    _sweeper.start()
    if settings.priority_aging_s > 0:  # low priorities advance while higher ones keep the queue busy
        _aging = AgingThread(r.redis, r.keys, settings.queue, settings.priority_aging_s)
        _aging.start()
    log.info("worker %s ready", r.hostname)


@signals.worker_shutdown.connect
def _close(**_: Any) -> None:
    if _keeper is not None:
        _keeper.stop()
    if _sweeper is not None:
        _sweeper.stop()
    if _aging is not None:
        _aging.stop()
    if _replica is not None:
        _replica.close()
    if _metrics_server is not None:
        _metrics_server.close()


@app.task(name=TASK_NAME, bind=True)
def recognize(self: Task, *args: Any, **kwargs: Any) -> int:
    """Recognise one message's items and write their results; acknowledged only after that.

    Takes any arguments so that a malformed message is counted and dead-lettered here rather
    than failing inside Celery, where it would be acknowledged and its job never completed.
    """
    try:
        with _metrics.in_flight.track_inprogress():
            return _deliver(self, args, kwargs)
    except (Reject, Retry):
        raise
    except Exception as exc:  # Redis itself failed: the message cannot even be counted; keep it
        log.exception("could not handle message %s; requeueing it", self.request.id)
        threading.Event().wait(RELEASE_PAUSE_S)
        raise Reject(f"{type(exc).__name__}: {exc}", requeue=True) from exc


def _deliver(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    r = replica()
    task_id = str(task.request.id)
    if not r.healthy:  # not the message's fault: not counted
        log.warning("model stalled: releasing message %s to another worker", task_id)
        threading.Event().wait(RELEASE_PAUSE_S)
        raise Reject("worker unhealthy (model stalled)", requeue=True)
    letters = DeadLetters(r.redis, r.keys, settings.result_ttl_s)
    attempt = letters.delivered(task_id)
    if attempt > 1:  # for operators and the fault tests: how often work was started again
        workers.add_stats(r.redis, r.keys, r.hostname, {"redelivered": 1})
    if delivery.at_start(attempt, settings.max_deliveries).action is Action.DEAD_LETTER:
        error = letters.last_error(task_id) or "its worker died while handling it"
        return _dead_letter(letters, task_id, args, kwargs, attempt - 1, error)
    try:
        message = delivery.parse(args, kwargs)
        served = r.handle(
            message.job, list(map(list, message.items)), message.sent_at or time.time(), _host(task), _priority(task)
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.warning("delivery %d of message %s failed: %s", attempt, task_id, error, exc_info=True)
        letters.failed(task_id, error)
        decision = delivery.after_failure(
            attempt,
            settings.max_deliveries,
            settings.retry_backoff_s,
            settings.retry_backoff_max_s,
            worker_at_fault=isinstance(exc, ModelStalledError),
        )
        if decision.action is Action.DEAD_LETTER:
            return _dead_letter(letters, task_id, args, kwargs, attempt, error)
        if decision.action is Action.RELEASE:
            raise Reject(error, requeue=True) from exc
        # A new message with the same id (so the count carries on), sent before this one is acknowledged.
        raise task.retry(countdown=decision.countdown_s, max_retries=None) from exc
    letters.succeeded(task_id)
    return served


def _dead_letter(
    letters: DeadLetters, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], attempts: int, error: str
) -> int:
    job, raw_items, usable = delivery.salvage(args, kwargs)
    error = error[:2000]
    letters.add(DeadLetter(task_id, job, raw_items, attempts, error, time.time()))
    _metrics.dead_lettered.inc()
    _metrics.failed("dead_letter", len(usable) if job is not None else 0)
    log.error(
        "message %s of job %s dead-lettered after %d attempt(s): %s",
        task_id,
        job,
        attempts,
        error,
        extra={"job": job, "items": len(usable), "task": task_id, "attempts": attempts},
    )
    if job is None:
        return 0
    try:
        return replica().dead_letter_results(job, usable, f"dead-lettered after {attempts} attempt(s): {error}")
    except Exception:  # results cannot be written for this job: the dead letter says so; don't loop
        log.exception("could not write the error results of dead letter %s; requeue it once fixed", task_id)
        return 0


def _host(task: Task) -> str:
    return str(task.request.hostname or "")


def _priority(task: Task) -> Priority:
    return of_step((task.request.delivery_info or {}).get("priority"))
