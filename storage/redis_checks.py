"""Checks every inkq process makes of its Redis at start: eviction policy and persistence.

inkq keeps state only in Redis. A ``maxmemory-policy`` other than ``noeviction`` lets Redis delete
inkq's keys when memory runs short: ``volatile-*`` picks among keys with a TTL, which are the
images of queued items and the jobs themselves; ``allkeys-*`` picks among everything, the queue,
model weights and labels included. So such a policy is refused (``INKQ_ALLOW_EVICTION=true``
overrides). With ``noeviction`` a full Redis refuses writes instead: submits fail with an error,
nothing is silently lost.

Persistence off (no AOF, no RDB snapshots) is only a warning: a restart then loses the models,
labels and every job, but tests and throwaway setups run that way on purpose.

Managed Redis often disables CONFIG: the check then reads INFO, and when neither answers it
says so in a warning rather than refusing to start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from config.errors import UnsafeStoreError
from config.settings import Settings
from storage.utils import as_text

__all__ = ["StoreConfig", "check_store", "read_config"]

log = logging.getLogger("inkq.redis")

SAFE_POLICY = "noeviction"


@dataclass(frozen=True)
class StoreConfig:
    """What could be read of a Redis server's configuration; None where it could not."""

    policy: str | None
    aof: bool | None
    rdb: bool | None  # periodic snapshots configured ("save" not empty)
    source: str  # "config", "info" or "none"


def read_config(client: redis.Redis) -> StoreConfig:
    """The eviction policy and persistence, from CONFIG GET, else from INFO, else unknown."""
    try:
        raw = client.config_get("maxmemory-policy")
        raw |= client.config_get("appendonly")
        raw |= client.config_get("save")
        return StoreConfig(
            policy=as_text(raw.get("maxmemory-policy")),
            aof=as_text(raw.get("appendonly")) == "yes" if "appendonly" in raw else None,
            rdb=bool(as_text(raw.get("save")).strip()) if "save" in raw else None,
            source="config",
        )
    except redis.ResponseError:  # CONFIG renamed, disabled or not permitted (managed Redis, ACLs)
        pass
    try:
        info = client.info("memory") | client.info("persistence")
    except redis.ResponseError:
        return StoreConfig(None, None, None, "none")
    policy = info.get("maxmemory_policy")
    aof = info.get("aof_enabled")
    # INFO does not show whether snapshots are scheduled, only when the last one happened.
    return StoreConfig(
        policy=None if policy is None else as_text(policy),
        aof=None if aof is None else bool(int(aof)),
        rdb=None,
        source="info",
    )


def check_store(client: redis.Redis, settings: Settings, component: str) -> list[str]:
    """Refuse a Redis that can evict inkq's keys; warn about missing persistence. Returns the warnings
    (also logged) so that callers and tests can see them."""
    found = read_config(client)
    warnings: list[str] = []
    if found.policy is None:
        warnings.append(
            f"{component}: cannot read Redis's maxmemory-policy (tried CONFIG GET and INFO): make sure it is "
            f"'{SAFE_POLICY}', or Redis may delete queued images, jobs and models when memory runs short, and that "
            "Redis persists its data (appendonly yes)"
        )
    elif found.policy != SAFE_POLICY:
        what = (
            "every key, the queue, models and labels included"
            if found.policy.startswith("allkeys")
            else ("keys with a TTL first: the images of queued items and the jobs themselves")
        )
        message = (
            f"Redis's maxmemory-policy is {found.policy!r}: when memory runs short Redis deletes {what}, and "
            f"inkq then loses work silently. Run `CONFIG SET maxmemory-policy {SAFE_POLICY}` (and set it in "
            "redis.conf or your provider's parameter group), or set INKQ_ALLOW_EVICTION=true to accept the risk"
        )
        if not settings.allow_eviction:
            raise UnsafeStoreError(f"{component} refuses to start: {message}")
        warnings.append(f"{component}: {message} (INKQ_ALLOW_EVICTION=true: starting anyway)")
    if found.aof is False and found.rdb is not True:
        warnings.append(
            f"{component}: Redis persistence is off (no appendonly, no snapshots): a Redis restart loses every "
            "model, label and job; set `appendonly yes` and `appendfsync everysec` to keep them"
        )
    elif found.aof is False:
        warnings.append(
            f"{component}: Redis persists by RDB snapshots only: a crash loses what was written since the last "
            "one (results, labels, queued work); set `appendonly yes` to keep it"
        )
    elif found.aof is None and found.source != "none":
        warnings.append(f"{component}: cannot tell whether Redis persists its data (read from {found.source})")
    for warning in warnings:
        log.warning("%s", warning)
    return warnings
