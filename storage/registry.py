"""The model registry: versions (weights + metadata) and an atomic "current" pointer, in Redis.

A version is immutable once published (only its weights can later be pruned, and its metadata
then says so). Any process with the Redis URL can find the current version, fetch its weights
and verify them against the recorded SHA-256 before loading.

Writes that move "current" or add versions run as Lua scripts that first check the caller's
fencing token against the registry lock (storage/lock.py), so a trainer that lost its lock
changes nothing. Version names are ``v{n}``: ``n`` comes from a counter kept above every listed
version, so a name is never handed out twice while the registry's data lasts; workers also
compare versions by (name, SHA-256), so a registry rebuilt from scratch cannot pass a new model
off as one they already serve.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis

from config.errors import (
    ArtifactCorruptError,
    InkqError,
    LockLostError,
    RegistryConflictError,
    VersionNotFoundError,
)
from storage.keys import Keys
from storage.lock import Lease, held
from storage.utils import as_text

__all__ = ["Registry", "VersionInfo", "VersionStatus"]

_FENCE = Path(__file__).with_name("registry_fence.lua").read_text()
_SEQ = Path(__file__).with_name("registry_seq.lua").read_text()
# Every write script starts with the fencing check.
_WRITES = {
    name: _FENCE + Path(__file__).with_name(f"registry_{name}.lua").read_text()
    for name in ("publish", "current", "prune")
}


class VersionStatus(StrEnum):
    PUBLISHED = "published"  # stored without a verdict (library use, tests)
    PROMOTED = "promoted"  # passed the gate (or had nothing to beat, or was forced)
    REJECTED = "rejected"  # failed the gate; kept for the record, weights pruned


@dataclass
class VersionInfo:
    """Metadata of one model version; stored as JSON beside the weights."""

    version: str = ""
    arch: dict[str, Any] = field(default_factory=dict)
    preprocess_version: str = ""
    temperature: float = 1.0
    data_fingerprint: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    parent: str | None = None
    created: float = 0.0
    sha256: str = ""
    size_bytes: int = 0
    weights_source: str = ""
    status: str = VersionStatus.PUBLISHED
    reason: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    # Label sequence number up to which this model learned labelled samples (0: none); a
    # rollback sets the label watermarks to the target's, so later labels are learned again.
    labels_upto: int = 0
    pruned: bool = False  # weights deleted by retention; metadata kept

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> VersionInfo:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        if "labels_upto" not in data:  # versions published before the field existed
            data["labels_upto"] = int((data.get("training") or {}).get("labels_upto", 0))
        return cls(**{k: v for k, v in data.items() if k in known})


class Registry:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def lock(self, ttl_s: float, what: str, *, force: bool = False) -> contextlib.AbstractContextManager[Lease]:
        """The one registry lock, for anything that moves "current" (train, retrain, rollback, prune)."""
        return held(self.redis, self.keys.retrain_lock, self.keys.registry_fence, ttl_s, what, force=force)

    def publish(
        self,
        weights: bytes,
        info: VersionInfo,
        *,
        make_current: bool = True,
        token: int | None = None,
        expect_current: str | None = None,
        check_current: bool = False,
    ) -> VersionInfo:
        """Store a new immutable version; optionally point "current" at it in the same step.

        ``token``: the caller's fencing token (``None``: only while nobody holds the lock).
        With ``check_current``, "current" must still be ``expect_current`` (``None``: no current
        model), so two candidates judged against the same parent cannot both be promoted.
        """
        number = int(self.redis.eval(_SEQ, 2, self.keys.model_sequence, self.keys.model_versions))
        info = dataclasses.replace(
            info,
            version=f"v{number}",
            created=info.created or time.time(),
            sha256=hashlib.sha256(weights).hexdigest(),
            size_bytes=len(weights),
        )
        expected = "" if not check_current else (expect_current or "-")
        keys = self.keys
        self._write(
            "publish",
            [
                keys.retrain_lock,
                keys.model_weights(info.version),
                keys.model_meta(info.version),
                keys.model_versions,
                keys.model_current,
                keys.labels_used,
                keys.labels_tried,
            ],
            [
                token,
                weights,
                info.to_json(),
                info.version,
                number,
                "1" if make_current else "0",
                expected,
                info.labels_upto,
                keys.model_events,
            ],
        )
        return info

    def set_current(self, version: str, *, token: int | None = None) -> VersionInfo:
        """Point "current" at an existing version (promotion or rollback), reset the label
        watermarks to what that version learned, and announce it."""
        info = self.info(version)
        keys = self.keys
        self._write(
            "current",
            [keys.retrain_lock, keys.model_weights(version), keys.model_current, keys.labels_used, keys.labels_tried],
            [token, version, info.labels_upto, keys.model_events],
        )
        return info

    def prune(self, keep_last: int, *, token: int | None = None) -> list[str]:
        """Delete the weights of versions retention does not keep (storage/retention.py);
        their metadata stays, marked pruned. Returns the names pruned."""
        from storage.retention import to_prune

        doomed = to_prune(self.versions(), self.current(), keep_last)
        if not doomed:
            return []
        keys: list[str] = [self.keys.retrain_lock, self.keys.model_current]
        args: list[object] = [token]
        for info in doomed:
            keys += [self.keys.model_weights(info.version), self.keys.model_meta(info.version)]
            args += [info.version, dataclasses.replace(info, pruned=True).to_json()]
        self._write("prune", keys, args)
        return [i.version for i in doomed]

    def _write(self, script: str, keys: list[str], args: Sequence[object]) -> None:
        token = args[0]
        argv = ["" if token is None else token, *args[1:]]
        try:
            self.redis.eval(_WRITES[script], len(keys), *keys, *argv)  # type: ignore[arg-type]
        except redis.ResponseError as exc:
            message = str(exc)
            for tag, error in (
                ("INKQ_FENCED", LockLostError),
                ("INKQ_CONFLICT", RegistryConflictError),
                ("INKQ_PRUNED", VersionNotFoundError),
            ):
                if tag in message:
                    raise _explained(error, message.split(tag, 1)[1].strip(), token is None) from exc
            raise

    def current(self) -> str | None:
        raw = self.redis.get(self.keys.model_current)
        return None if raw is None else as_text(raw)

    def resolve(self, version: str | None = None) -> str:
        """The given version, or the current one; raises when there is none."""
        version = version or self.current()
        if not version:
            raise VersionNotFoundError(
                "the registry has no current model yet: run `trainer train` first (INKQ_REDIS_URL selects the registry)"
            )
        return version

    def info(self, version: str | None = None) -> VersionInfo:
        version = self.resolve(version)
        raw = self.redis.get(self.keys.model_meta(version))
        if raw is None:
            raise VersionNotFoundError(f"model version {version} does not exist in the registry")
        return VersionInfo.from_json(raw)

    def weights(self, version: str | None = None) -> tuple[VersionInfo, bytes]:
        """Metadata and verified weights of a version (the current one by default)."""
        info = self.info(version)
        raw = self.redis.get(self.keys.model_weights(info.version))
        if raw is None:
            raise ArtifactCorruptError(f"model version {info.version} has metadata but no weights")
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        digest = hashlib.sha256(data).hexdigest()
        if digest != info.sha256:
            raise ArtifactCorruptError(
                f"model version {info.version} weights fail their checksum (sha256 {digest[:12]}..., "
                f"recorded {info.sha256[:12]}...); refusing to load them"
            )
        return info, data

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first."""
        names = [as_text(v) for v in self.redis.zrange(self.keys.model_versions, 0, -1)]
        if not names:
            return []
        metas = self.redis.mget([self.keys.model_meta(v) for v in names])
        return [VersionInfo.from_json(m) for m in metas if m is not None]


def _explained(error: type[InkqError], detail: str, unlocked: bool) -> InkqError:
    if error is LockLostError and unlocked:
        return error(f"the registry refused this change: {detail}; wait for it to finish and try again")
    if error is LockLostError:
        return error(
            f"the registry refused this change: {detail}. This run lost the registry lock (it stalled past "
            "INKQ_LOCK_TTL_S, or `trainer rollback --force` took it over); nothing was changed: run it again"
        )
    if error is RegistryConflictError:
        return error(f"the registry refused this change: {detail}; nothing was changed: run it again")
    return error(f"{detail}: roll back to a version that still has weights (see `trainer versions`)")
