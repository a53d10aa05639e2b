"""Riding out a short Redis outage in a long wait: a Sentinel failover, a restart, a dropped link.

redis-py retries one command about ten times within a few seconds, which a failover can outlast:
the old master drops every client when it is demoted, and the new one is named by the sentinels
only once it is ready. A caller that waits for minutes (``producer results --wait``) should not
fail for that; it should fail, with the reason, when Redis stays away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NoReturn

import redis

from config.errors import StoreUnavailableError

__all__ = ["GRACE_S", "TRANSIENT", "Outage"]

log = logging.getLogger("inkq.redis")

# How long a wait keeps retrying an unreachable Redis before it gives up. A Sentinel failover
# (down-after-milliseconds plus the election and the promotion) usually takes well under this.
GRACE_S = 30.0
# The errors that mean "not reachable now", as opposed to a refused command.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError)
_FIRST_PAUSE_S = 0.05
_LONGEST_PAUSE_S = 1.0


class Outage:
    """Tracks one caller's run of failures; ``failed`` pauses with backoff or, past the grace, raises."""

    def __init__(
        self,
        what: str,
        grace_s: float = GRACE_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.what = what
        self.grace_s = grace_s
        self.clock = clock
        self.sleep = sleep
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: Exception) -> None:
        now = self.clock()
        if self.since is None:
            self.since = now
            log.warning("%s: Redis unreachable (%s); retrying for up to %.0fs", self.what, exc, self.grace_s)
        self.failures += 1
        if now - self.since >= self.grace_s:
            self.give_up(exc)
        self.sleep(min(_LONGEST_PAUSE_S, _FIRST_PAUSE_S * 2 ** (self.failures - 1)))

    def give_up(self, exc: Exception) -> NoReturn:
        lasted = 0.0 if self.since is None else self.clock() - self.since
        raise StoreUnavailableError(
            f"{self.what}: Redis unreachable for {lasted:.0f}s ({max(1, self.failures)} tries; last: {exc}); "
            "check that Redis (or its sentinels) are up, then run the command again: nothing was lost"
        ) from exc

    def recovered(self) -> None:
        if self.since is not None:
            log.info("%s: Redis reachable again after %d failed tries", self.what, self.failures)
        self.since, self.failures = None, 0
