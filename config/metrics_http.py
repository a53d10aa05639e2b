"""The HTTP endpoint of a long-running inkq process (a worker, `trainer watch`): ``/metrics`` for
Prometheus, behind a bearer token, and ``/healthz``. Here, below both, so each imports it.

Off unless INKQ_METRICS_PORT names a port; then INKQ_METRICS_TOKEN is required, because the
metrics tell anyone who reads them the model version, the load and the failure rates. The token
is compared in constant time and never logged. ``/healthz`` needs no token (probes rarely carry
one) and says only whether the process is healthy (the ``Health`` it is given decides: for a worker,
worker/metrics_http.py), 200 or 503, with the reason in a small JSON body.

Served by wsgiref on a daemon thread, one thread per request, so a slow scraper cannot hold up
a probe; the process's own threads never wait for it.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from config.errors import ConfigError
from config.settings import Settings

__all__ = ["Health", "MetricsServer", "check", "metrics_app", "serve"]

log = logging.getLogger(__name__)

# (healthy, why): what /healthz answers.
Health = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]
# A tuple: wsgiref adds Content-Length to the list it is given, so each response gets a new list.
JSON_HEADERS = (("Content-Type", "application/json"),)


def check(settings: Settings) -> None:
    """Refuse a metrics port without a token (or out of range), before the process loads anything."""
    port = settings.metrics_port
    if port == 0:
        return
    if port > 65535:
        raise ConfigError(f"INKQ_METRICS_PORT={port} is not a TCP port: use 1-65535, or 0 to turn metrics off")
    if not settings.metrics_token:
        raise ConfigError(
            f"INKQ_METRICS_PORT={port} serves metrics only behind a token: set INKQ_METRICS_TOKEN to a long "
            "random string (e.g. `openssl rand -hex 32`) and give the scraper the same bearer token, "
            "or set INKQ_METRICS_PORT=0 to turn metrics off"
        )


def metrics_app(registry: CollectorRegistry, token: str, health: Health) -> Callable[..., Iterable[bytes]]:
    """The WSGI application: prometheus_client's exposition behind the token check, and the probe."""
    exposition = make_wsgi_app(registry)
    expected = f"Bearer {token}".encode()

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ok, reason = health()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, list(JSON_HEADERS))
            return [json.dumps({"healthy": ok, "reason": reason}).encode()]
        if path != "/metrics":
            start_response("404 Not Found", list(JSON_HEADERS))
            return [b'{"error": "not found: try /metrics or /healthz"}']
        given = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
        if not hmac.compare_digest(given, expected):
            start_response("401 Unauthorized", [*JSON_HEADERS, ("WWW-Authenticate", 'Bearer realm="inkq"')])
            return [b'{"error": "send Authorization: Bearer <INKQ_METRICS_TOKEN>"}']
        return exposition(environ, start_response)

    return application


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape on stderr: every few seconds, for ever, it would drown the worker's log."""


class MetricsServer:
    """The endpoint, listening on a daemon thread from construction; ``port`` is the bound port."""

    def __init__(self, host: str, port: int, app: Callable[..., Iterable[bytes]]) -> None:
        try:
            self._server = make_server(host, port, app, _ThreadingServer, _QuietHandler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} (INKQ_METRICS_HOST, INKQ_METRICS_PORT): {exc}; "
                "give each worker and `trainer watch` on a host its own port"
            ) from exc
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="inkq-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(settings: Settings, registry: CollectorRegistry, health: Health) -> MetricsServer | None:
    """Start the endpoint when INKQ_METRICS_PORT is set (``check`` first); None when it is off."""
    check(settings)
    if settings.metrics_port == 0:
        return None
    server = MetricsServer(
        settings.metrics_host, settings.metrics_port, metrics_app(registry, settings.metrics_token, health)
    )
    log.info(
        "metrics on http://%s:%d/metrics (bearer token required), probe on /healthz", settings.metrics_host, server.port
    )
    return server
