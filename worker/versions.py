"""Which model versions a worker switches to: refusals, their causes, and when to try again.

A version can fail to load for a passing reason (Redis unreachable or slow) or a lasting one
(weights fail their checksum, were pruned, an architecture or a preprocessing this code does
not implement). A passing failure is retried with exponential backoff; a lasting one is never
retried for that exact artifact. Versions are told apart by (name, SHA-256): a registry rebuilt
after losing its data may hand out a name again, and the worker must not mistake the new model
for the one it serves, nor carry over a refusal to it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from config.errors import ArtifactCorruptError, ModelError, PreprocessMismatchError
from recognizer import scan
from storage.connection import BLOCK_S
from storage.keys import Keys
from storage.registry import VersionInfo
from storage.utils import as_text

__all__ = ["Refusals", "check_preprocess", "is_transient", "watch_announcements"]

log = logging.getLogger(__name__)

FIRST_RETRY_S = 2.0
MAX_RETRY_S = 300.0


def check_preprocess(info: VersionInfo) -> None:
    """Refuse a version whose inputs this worker would prepare differently from its training."""
    if info.preprocess_version != scan.PREPROCESS_VERSION:
        raise PreprocessMismatchError(
            f"model {info.version} expects preprocessing {info.preprocess_version or '(unrecorded)'!r} but this "
            f"worker implements {scan.PREPROCESS_VERSION!r}: upgrade the worker (or publish a model trained by "
            "this version of inkq)"
        )


def is_transient(exc: BaseException) -> bool:
    """Whether a failure to load a version may pass by itself (so trying again makes sense)."""
    if isinstance(exc, (ArtifactCorruptError, PreprocessMismatchError, ValueError)):
        return False  # checksum, missing or pruned weights, unloadable tensors, unknown architecture
    if isinstance(exc, ModelError):
        return True  # metadata not there (yet): a registry being restored
    return isinstance(exc, (redis.RedisError, OSError, TimeoutError, MemoryError))


@dataclass
class Refusal:
    reason: str
    permanent: bool
    attempts: int
    retry_at: float  # monotonic time of the next try (inf when permanent)


class Refusals:
    """Versions that failed to load, by (name, SHA-256), with backoff for transient causes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_id: dict[tuple[str, str], Refusal] = {}
        self._lock = threading.Lock()

    def may_try(self, version: str, sha256: str) -> bool:
        with self._lock:
            refusal = self._by_id.get((version, sha256))
        return refusal is None or self.clock() >= refusal.retry_at

    def refuse(self, version: str, sha256: str, exc: BaseException) -> Refusal:
        transient = is_transient(exc)
        with self._lock:
            attempts = self._by_id[(version, sha256)].attempts + 1 if (version, sha256) in self._by_id else 1
            delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** (attempts - 1)) if transient else float("inf")
            refusal = Refusal(f"{type(exc).__name__}: {exc}", not transient, attempts, self.clock() + delay)
            self._by_id[(version, sha256)] = refusal
        return refusal

    def forget(self, version: str, sha256: str) -> None:
        with self._lock:
            self._by_id.pop((version, sha256), None)

    def snapshot(self) -> dict[str, str]:
        """For the heartbeat: version name -> why it is refused (and whether it will be retried)."""
        with self._lock:
            items = list(self._by_id.items())
        return {
            version: refusal.reason
            if refusal.permanent
            else f"{refusal.reason} (transient: retried with backoff, attempt {refusal.attempts})"
            for (version, _), refusal in items
        }


def watch_announcements(
    client: redis.Redis, keys: Keys, stop: threading.Event, on_version: Callable[[str | None], object], check_s: float
) -> None:
    """Call ``on_version`` with each announced version, and with None every ``check_s`` seconds
    (a missed message, a transient refusal due for retry); survives Redis blips."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    last_check = time.monotonic()
    while not stop.is_set():
        try:
            if not pubsub.subscribed:  # first time, and after Redis went away (a restart, a failover)
                pubsub.subscribe(keys.model_events)
            message = pubsub.get_message(timeout=BLOCK_S)
            announced = as_text(message["data"]) if message else None
            if announced or time.monotonic() - last_check > check_s:
                last_check = time.monotonic()
                on_version(announced)
        except Exception:  # Redis blips: keep watching, keep serving
            log.warning("model version watch failed; retrying", exc_info=True)
            stop.wait(1.0)
            pubsub.close()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.close()
