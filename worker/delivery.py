"""What happens to a message that fails: the retry and dead-letter policy, and message parsing.

Pure functions, so the policy is tested without Redis or Celery. A message is delivered at most
``max_deliveries`` times: after a failed delivery it is retried after
``min(backoff_max_s, backoff_s * 2 ** (attempt - 1))`` seconds (1, 2, 4, ... capped at 60 s by
default); the delivery that reaches the limit, or any delivery beyond it (the one before killed
its worker), dead-letters it instead.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from config.errors import MessageError

__all__ = ["Action", "Decision", "Message", "after_failure", "at_start", "backoff", "parse", "salvage"]

Item = tuple[int, str, str]


class Action(enum.StrEnum):
    PROCESS = "process"
    RETRY = "retry"  # again after a delay, as a new message with the same id
    RELEASE = "release"  # back to the queue at once, for another worker (this one is unhealthy)
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Decision:
    action: Action
    countdown_s: float = 0.0


@dataclass(frozen=True)
class Message:
    job: str
    items: list[Item]
    sent_at: float | None


def backoff(attempt: int, base_s: float, max_s: float) -> float:
    """Delay before the retry that follows failed delivery number ``attempt`` (1-based)."""
    return float(min(max_s, base_s * 2 ** min(max(attempt - 1, 0), 62)))


def at_start(attempt: int, max_deliveries: int) -> Decision:
    """Before any work: a delivery beyond the limit means earlier ones died with their worker."""
    return Decision(Action.DEAD_LETTER if attempt > max_deliveries else Action.PROCESS)


def after_failure(
    attempt: int, max_deliveries: int, base_s: float, max_s: float, *, worker_at_fault: bool = False
) -> Decision:
    """After delivery number ``attempt`` failed: retry with backoff, release, or dead-letter."""
    if attempt >= max_deliveries:
        return Decision(Action.DEAD_LETTER)
    if worker_at_fault:  # another worker may well succeed: no reason to wait
        return Decision(Action.RELEASE)
    return Decision(Action.RETRY, backoff(attempt, base_s, max_s))


def parse(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Message:
    """``(job, [[index, digest, path], ...], sent_at)``, checked; ``MessageError`` says what is wrong."""
    fields = dict(zip(("job", "items", "sent_at"), args, strict=False)) | kwargs
    job, items, sent_at = fields.get("job"), fields.get("items"), fields.get("sent_at")
    if len(args) > 3 or set(fields) - {"job", "items", "sent_at"}:
        raise MessageError(f"unexpected message arguments: {len(args)} positional, keywords {sorted(kwargs)}")
    if not isinstance(job, str) or not job:
        raise MessageError(f"message names no job (got {type(job).__name__})")
    if not isinstance(items, list):
        raise MessageError(f"message items are a {type(items).__name__}, not a list")
    parsed = [_item(item) for item in items]
    if sent_at is not None and (not isinstance(sent_at, int | float) or isinstance(sent_at, bool)):
        raise MessageError(f"message sent_at is a {type(sent_at).__name__}, not a number")
    return Message(job, _strict(parsed, items), sent_at)


def _strict(parsed: list[Item | None], raw: list[Any]) -> list[Item]:
    bad = [item for item, p in zip(raw, parsed, strict=True) if p is None]
    if bad:
        raise MessageError(f"{len(bad)} malformed item(s), e.g. {str(bad[0])[:200]} (want [index, digest, path])")
    return [p for p in parsed if p is not None]


def _item(item: Any) -> Item | None:
    if not isinstance(item, list | tuple) or len(item) != 3:
        return None
    index, digest, path = item
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        return None
    if not isinstance(digest, str) or not isinstance(path, str):
        return None
    return index, digest, path


def salvage(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str | None, list[Any], list[Item]]:
    """What can be read from a message, however malformed: its job, its raw items, and the items
    that can be given an error result (a valid index is enough; digest and path as far as known)."""
    fields = dict(zip(("job", "items"), args, strict=False)) | kwargs
    job = fields.get("job") if isinstance(fields.get("job"), str) and fields.get("job") else None
    raw = fields.get("items")
    raw_items = list(raw) if isinstance(raw, list) else []
    usable: list[Item] = []
    for item in raw_items:
        if not isinstance(item, list | tuple) or not item:
            continue
        index = item[0]
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            continue
        digest = str(item[1]) if len(item) > 1 else ""
        path = str(item[2]) if len(item) > 2 else ""
        usable.append((index, digest[:200], path[:1000]))
    return job, raw_items, usable
