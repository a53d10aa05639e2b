"""Redis Sentinel: one INKQ_REDIS_URL naming the sentinels, for redis-py and kombu alike.

``sentinel://[:PASSWORD@]HOST:PORT[;sentinel://HOST:PORT...][/DB]`` lists the sentinels (kombu's
own syntax, so the broker reads the same URL); INKQ_SENTINEL_MASTER names the master they watch.
The password is the master's (and its replicas'), given once, in the first URL; the sentinels
themselves are reached without one. Each client asks the sentinels for the current master and,
after a failover, reconnects to the new one: redis-py's ``SentinelConnectionPool`` drops a
connection whose server answers as a replica, kombu's sentinel transport the same. TLS through
Sentinel is not supported (use rediss:// to a single server, or a TLS-terminating proxy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from config.errors import ConfigError

__all__ = ["SCHEME", "SentinelUrl", "is_sentinel", "master_client", "parse"]

SCHEME = "sentinel"


@dataclass(frozen=True)
class SentinelUrl:
    hosts: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int

    def kombu_url(self) -> str:
        """The URL for Celery: every sentinel with the database, the credentials on the first."""
        creds = ""
        if self.password is not None or self.username:
            creds = f"{self.username or ''}:{self.password or ''}@"
        parts = [f"{SCHEME}://{creds if i == 0 else ''}{h}:{p}/{self.db}" for i, (h, p) in enumerate(self.hosts)]
        return ";".join(parts)


def is_sentinel(url: str) -> bool:
    return url.startswith(f"{SCHEME}://")


def parse(url: str) -> SentinelUrl:
    """The sentinels, credentials and database of a ``sentinel://`` URL (errors say how to fix it)."""
    hosts: list[tuple[str, int]] = []
    username = password = None
    dbs: set[int] = set()
    for part in url.split(";"):
        split = urlsplit(part.strip())
        if split.scheme != SCHEME or not split.hostname:
            raise ConfigError(
                f"INKQ_REDIS_URL: {part.split('@')[-1]!r} is not a sentinel: use "
                "sentinel://[:PASSWORD@]HOST:PORT;sentinel://HOST:PORT/DB"
            )
        if split.query:
            raise ConfigError(
                "INKQ_REDIS_URL: a sentinel:// URL takes no options (TLS through Sentinel is unsupported)"
            )
        hosts.append((split.hostname, split.port or 26379))
        if split.password is not None and password is None:
            username, password = unquote(split.username or "") or None, unquote(split.password)
        if split.path.strip("/"):
            try:
                dbs.add(int(split.path.strip("/")))
            except ValueError:
                raise ConfigError(f"INKQ_REDIS_URL: {split.path!r} is not a database number") from None
    if len(dbs) > 1:
        raise ConfigError(f"INKQ_REDIS_URL names databases {sorted(dbs)}: give one, e.g. /0 on the last sentinel")
    return SentinelUrl(tuple(hosts), username, password, dbs.pop() if dbs else 0)


def master_client(url: str, master: str, **connection: Any) -> redis.Redis:
    """A client of the master the sentinels in ``url`` name ``master``, following failovers.
    ``connection`` (timeouts, health checks) applies to the sentinel and master connections alike."""
    parsed = parse(url)
    timeouts = {k: v for k, v in connection.items() if k in ("socket_timeout", "socket_connect_timeout")}
    sentinels = Sentinel(list(parsed.hosts), sentinel_kwargs=timeouts)
    return sentinels.master_for(master, username=parsed.username, password=parsed.password, db=parsed.db, **connection)
