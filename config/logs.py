"""How every inkq process logs: text lines for people, or one JSON object a line for log pipelines.

``INKQ_LOG_FORMAT=json`` uses python-json-logger: each record carries time, level, logger and
message, plus whatever its call passed as ``extra=`` (the worker adds job, items, batch and
model_version), so a pipeline can filter on fields instead of parsing sentences. Nothing here
adds data to a record: what a line holds is what its call logged (Redis URLs are logged only
through storage.connection.redact).
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from config.settings import Settings

__all__ = ["TEXT_FORMAT", "apply_format", "configure", "formatter"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JSON_FIELDS = ["asctime", "levelname", "name", "message"]
_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``log_format`` (``text`` or ``json``, as INKQ_LOG_FORMAT allows)."""
    if log_format == "json":
        return JsonFormatter(_JSON_FIELDS, rename_fields=_RENAMED, json_ensure_ascii=False)
    return logging.Formatter(TEXT_FORMAT)


def configure(settings: Settings) -> None:
    """Log to stderr in the configured format and level (a no-op where logging is set up already,
    as under pytest)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(settings.log_format))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])


def apply_format(logger: logging.Logger, log_format: str) -> None:
    """Give every handler of ``logger`` the configured format (for handlers Celery made)."""
    for handler in logger.handlers:
        handler.setFormatter(formatter(log_format))
