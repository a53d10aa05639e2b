"""The model registry: versions (weights + metadata) and an atomic "current" pointer, in Redis.

A version is immutable once published. Any process with the Redis URL can find the current
version, fetch its weights and verify them against the recorded SHA-256 before loading.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from config.errors import ArtifactCorruptError, VersionNotFoundError
from storage.keys import Keys


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
    status: str = "published"
    reason: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> VersionInfo:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def text(raw: object) -> str:
    """A Redis reply (bytes without decode_responses) as str."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Registry:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def publish(self, weights: bytes, info: VersionInfo, *, make_current: bool = True) -> VersionInfo:
        """Store a new immutable version; optionally point "current" at it in the same transaction."""
        number = int(self.redis.incr(self.keys.model_sequence))
        info = dataclasses.replace(
            info,
            version=f"v{number}",
            created=info.created or time.time(),
            sha256=hashlib.sha256(weights).hexdigest(),
            size_bytes=len(weights),
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.model_weights(info.version), weights)
        pipe.set(self.keys.model_meta(info.version), info.to_json())
        pipe.zadd(self.keys.model_versions, {info.version: number})
        if make_current:
            pipe.set(self.keys.model_current, info.version)
            pipe.publish(self.keys.model_events, info.version)
        pipe.execute()
        return info

    def set_current(self, version: str) -> None:
        """Point "current" at an existing version (promotion or rollback) and announce it."""
        self.info(version)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.model_current, version)
        pipe.publish(self.keys.model_events, version)
        pipe.execute()

    def current(self) -> str | None:
        raw = self.redis.get(self.keys.model_current)
        return None if raw is None else text(raw)

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
        names = [text(v) for v in self.redis.zrange(self.keys.model_versions, 0, -1)]
        if not names:
            return []
        metas = self.redis.mget([self.keys.model_meta(v) for v in names])
        return [VersionInfo.from_json(m) for m in metas if m is not None]
