"""Opening a Redis connection from the configured URL (TLS and passwords ride in the URL)."""

from __future__ import annotations

import redis

from config.errors import StoreUnavailableError


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ':'}***@{host}"


def connect(url: str, *, check: bool = True, timeout: float = 5.0) -> redis.Redis:
    """A client for ``url``; with ``check``, fails fast with a clear error when Redis is down."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, health_check_interval=30)
        if check:
            client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise StoreUnavailableError(f"cannot reach Redis at {redact(url)}: {exc} (set INKQ_REDIS_URL)") from exc
    except redis.RedisError as exc:  # auth failures, bad URLs
        raise StoreUnavailableError(f"Redis at {redact(url)} refused the connection: {exc}") from exc
    except ValueError as exc:
        raise StoreUnavailableError(f"INKQ_REDIS_URL={redact(url)!r} is not a valid Redis URL: {exc}") from exc
    return client
