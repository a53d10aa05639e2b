"""Opening a Redis connection from the configured URL: TLS options and passwords ride in the URL.

``rediss://[:PASSWORD@]HOST:PORT/DB?ssl_ca_certs=/path/ca.pem`` is the whole description of a
connection; redis-py (``connect``) and Celery (``storage.queue.make_app``) both read it through
``tls_options``, so both sides always verify the same certificate against the same CA. inkq
always verifies: a URL asking for less (``ssl_cert_reqs=none``, ``ssl_check_hostname=false``) is
refused rather than honoured.

Timeouts: every command waits at most the socket timeout (``INKQ_REDIS_TIMEOUT_S``), so a
half-open connection fails a call instead of hanging its thread; blocking reads (BLPOP, pub/sub
``get_message``) must wait at most ``BLOCK_S``, well below it, so they never look like a dead
server.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis

from config.errors import ConfigError, StoreUnavailableError
from config.settings import Settings
from storage import sentinel

__all__ = ["BLOCK_S", "CONNECT_TIMEOUT_S", "HEALTH_CHECK_S", "broker_url", "connect", "redact", "tls_options"]

# The longest any blocking read (BLPOP, pub/sub get_message) may wait; the minimum of
# INKQ_REDIS_TIMEOUT_S keeps the socket timeout well above it.
BLOCK_S = 1.0
CONNECT_TIMEOUT_S = 5.0
# A connection idle this long is PINGed before its next command (and kombu checks its BRPOP and
# pub/sub connections this often), so a dead one is noticed before it is used.
HEALTH_CHECK_S = 10
# Certificate files a URL may name; everything else about TLS is fixed to "verify".
_TLS_FILES = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ':'}***@{host}"


def tls_options(url: str) -> dict[str, Any]:
    """The TLS keyword arguments for ``url`` (empty unless ``rediss://``), always verifying.

    Shared by redis-py and kombu (``broker_use_ssl``): both accept these names.
    """
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    asked = sorted(k for k in query if k.startswith("ssl_"))
    if parts.scheme != "rediss":
        if asked:
            raise ConfigError(
                f"INKQ_REDIS_URL={redact(url)!r} sets {', '.join(asked)} but is not rediss://: use rediss:// for TLS"
            )
        return {}
    if query.get("ssl_cert_reqs", "required").lower() not in ("required", "cert_required"):
        raise ConfigError(
            f"INKQ_REDIS_URL={redact(url)!r}: inkq always verifies the server's certificate; drop ssl_cert_reqs "
            "and give the CA that signed it with ssl_ca_certs=/path/ca.pem"
        )
    if query.get("ssl_check_hostname", "true").lower() in ("false", "0", "no", "off"):
        raise ConfigError(
            f"INKQ_REDIS_URL={redact(url)!r}: inkq always checks the host name; use a certificate whose subject "
            "alternative names include the host in the URL, and drop ssl_check_hostname"
        )
    unknown = [k for k in asked if k not in (*_TLS_FILES, "ssl_cert_reqs", "ssl_check_hostname")]
    if unknown:
        raise ConfigError(
            f"INKQ_REDIS_URL={redact(url)!r}: unknown TLS option(s) {', '.join(unknown)}; "
            f"known: {', '.join(_TLS_FILES)}"
        )
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    for name in _TLS_FILES:
        if name in query:
            if not Path(query[name]).exists():
                raise ConfigError(f"INKQ_REDIS_URL={redact(url)!r}: {name}={query[name]} does not exist")
            options[name] = query[name]
    return options


def broker_url(url: str) -> str:
    """``url`` without its query: kombu gets the TLS options as ``broker_use_ssl`` instead, so that it
    cannot read them differently (it would also refuse options it does not know)."""
    if sentinel.is_sentinel(url):  # every sentinel with the database, as kombu reads it
        return sentinel.parse(url).kombu_url()
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=""))


def connect(target: str | Settings, *, check: bool = True, timeout: float = CONNECT_TIMEOUT_S) -> redis.Redis:
    """A client for a URL or for the settings' URL and timeout; with ``check``, fails fast with a clear
    error when Redis is down, refuses the password or presents an untrusted certificate."""
    if isinstance(target, Settings):
        url, socket_timeout, master = target.redis_url, float(target.redis_timeout_s), target.sentinel_master
    else:
        url, socket_timeout, master = target, float(Settings.redis_timeout_s), Settings.sentinel_master
    tls = tls_options(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": socket_timeout,
        "health_check_interval": HEALTH_CHECK_S,
    }
    try:
        if sentinel.is_sentinel(url):
            client = sentinel.master_client(url, master, **options)
        else:
            client = redis.Redis.from_url(url, **options, **tls)
        if check:
            client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        hint = "set INKQ_REDIS_URL"
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in str(exc).lower():
            hint = "the server's certificate is not trusted: name the CA that signed it with ?ssl_ca_certs=/path/ca.pem"
        raise StoreUnavailableError(f"cannot reach Redis at {redact(url)}: {exc} ({hint})") from exc
    except redis.RedisError as exc:  # auth failures, bad URLs
        raise StoreUnavailableError(f"Redis at {redact(url)} refused the connection: {exc}") from exc
    except ValueError as exc:
        raise StoreUnavailableError(f"INKQ_REDIS_URL={redact(url)!r} is not a valid Redis URL: {exc}") from exc
    return client
