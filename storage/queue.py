"""The work queue: a Celery application on Redis that speaks JSON only.

Producer and worker build the same app from the settings; the producer only sends
``TASK_NAME`` messages (no torch import), the worker registers the task under that name.
A message carries references, never image bytes: ``(job, [[index, digest, path], ...])``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import redis
from celery import Celery

from config.errors import QueueFullError
from config.settings import Settings
from storage.connection import CONNECT_TIMEOUT_S, HEALTH_CHECK_S, broker_url, tls_options
from storage.keys import Keys
from storage.priority import STEPS, Priority, lists
from storage.sentinel import is_sentinel

TASK_NAME = "inkq.recognize"


def make_app(settings: Settings) -> Celery:
    keys = Keys(settings.key_prefix)
    # TLS options travel as broker_use_ssl, read from the URL exactly as redis-py reads them: kombu
    # verifies the certificate too (without them it would fall back to CERT_NONE).
    tls = tls_options(settings.redis_url)
    app = Celery("inkq", broker=broker_url(settings.redis_url), set_as_current=False)
    restore_every = max(1, min(10, settings.visibility_timeout_s // 4))
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        task_ignore_result=True,
        task_default_queue=settings.queue,
        task_routes={TASK_NAME: {"queue": settings.queue}},
        # At-least-once: acknowledge after the results are written; a message whose worker dies
        # goes back to the queue once the visibility timeout passes (checked every few seconds).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.prefetch_multiplier,
        worker_concurrency=settings.worker_threads,
        worker_pool="threads",
        worker_hijack_root_logger=False,
        # Flower's task list (INKQ_TASK_EVENTS): pub/sub only, so nothing piles up when nobody listens.
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        broker_connection_retry_on_startup=True,
        broker_use_ssl=tls or False,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": restore_every,
            "unacked_restore_throttle": 1,
            "global_keyprefix": keys.broker_prefix,
            # A half-open connection fails a command instead of hanging it; kombu's BRPOP waits 1 s.
            "socket_timeout": settings.redis_timeout_s,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "health_check_interval": HEALTH_CHECK_S,
        }
        | ({"master_name": settings.sentinel_master} if is_sentinel(settings.redis_url) else {}),
    )
    return app


def enqueue(app: Celery, job: str, items: Sequence[Sequence[object]], priority: Priority = Priority.NORMAL) -> None:
    app.send_task(TASK_NAME, args=[job, [list(item) for item in items], time.time()], priority=STEPS[priority])


def depth(client: redis.Redis, settings: Settings) -> int:
    """Messages waiting in the queue, every priority (not counting those workers have reserved)."""
    pipe = client.pipeline(transaction=False)
    for key in lists(Keys(settings.key_prefix), settings.queue):
        pipe.llen(key)
    return int(sum(pipe.execute()))


def wait_for_room(
    client: redis.Redis,
    settings: Settings,
    wait: bool,
    timeout: float | None,
    keep: Callable[[], None] | None = None,
) -> None:
    """Backpressure: hold off while the queue is deeper than INKQ_QUEUE_MAX_MESSAGES, calling
    ``keep`` (which renews a submit's lease) while waiting; QueueFullError when ``wait`` is
    false or ``timeout`` passes."""
    bound = settings.queue_max_messages
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.05
    while (held := depth(client, settings)) >= bound:
        if not wait:
            raise QueueFullError(
                f"queue holds {held:,} messages, at the bound of {bound:,} (INKQ_QUEUE_MAX_MESSAGES); "
                "retry later or submit without --no-wait"
            )
        if deadline is not None and time.monotonic() > deadline:
            raise QueueFullError(f"queue stayed at {held:,} messages or more for {timeout}s")
        time.sleep(delay)  # the queue drains at the workers' pace; nothing to block on
        if keep:
            keep()
        delay = min(delay * 2, 1.0)
