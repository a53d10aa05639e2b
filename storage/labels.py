"""Labelled samples: images people labelled or corrected, stored durably for fine-tuning.

Each sample is keyed by its image's content hash, so the same image labelled twice is one
sample (the later label wins, as a correction should). Every write gets a sequence number;
a retrain takes the samples past the last promoted watermark. Held-out membership is a pure
function of the hash, so a sample never moves between training and evaluation.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from storage.keys import Keys
from storage.utils import as_text

NUM_CLASSES = 10


@dataclass(frozen=True)
class Sample:
    """One labelled image: a single character (``label`` 0-9, ``text`` None) or a field of
    several digits (``text``, ``label`` FIELD); the trainer cuts a field into its characters."""

    digest: str
    label: int
    source: str
    path: str
    seq: int
    time: float
    text: str | None = None

    def to_json(self) -> str:
        body = {"label": self.label, "source": self.source, "path": self.path, "seq": self.seq, "time": self.time}
        return json.dumps(body | ({"text": self.text} if self.text is not None else {}))


FIELD = -1  # the label of a sample whose truth is a field's text


def as_label(value: int | str) -> tuple[int, str | None]:
    """(label, text) to store for a validated label: a digit, or the text of a longer field."""
    if isinstance(value, str) and len(value) > 1:
        return FIELD, value
    return int(value), None


def held_out(digest: str, fraction: float) -> bool:
    """Whether a sample belongs to the held-out slice: fixed by its hash, about ``fraction`` of all."""
    bucket = int(hashlib.sha256(("holdout:" + digest).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


class Labels:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def add(self, samples: list[tuple[str, bytes, int | str, str]], source: str) -> int:
        """Store (digest, image bytes, label, path) samples atomically: all of them or none. A
        label is a digit, or a field's text of two or more digits."""
        if not samples:
            return 0
        now = time.time()
        first = int(self.redis.incrby(self.keys.labels_sequence, len(samples))) - len(samples) + 1
        pipe = self.redis.pipeline(transaction=True)
        for offset, (digest, data, label, path) in enumerate(samples):
            number, text = as_label(label)
            sample = Sample(digest, number, source, path, first + offset, now, text)
            pipe.set(self.keys.label_image(digest), data)
            pipe.hset(self.keys.labels, digest, sample.to_json())
            pipe.zadd(self.keys.labels_log, {digest: sample.seq})
        pipe.execute()
        return len(samples)

    def has(self, digest: str) -> bool:
        return bool(self.redis.hexists(self.keys.labels, digest))

    def count(self) -> int:
        return int(self.redis.zcard(self.keys.labels_log))

    def latest_seq(self) -> int:
        return int(self.redis.get(self.keys.labels_sequence) or 0)

    def watermark(self, which: str = "used") -> int:
        key = self.keys.labels_used if which == "used" else self.keys.labels_tried
        return int(self.redis.get(key) or 0)

    def set_watermark(self, seq: int, which: str = "used") -> None:
        key = self.keys.labels_used if which == "used" else self.keys.labels_tried
        self.redis.set(key, seq)

    def since(self, seq: int) -> list[Sample]:
        """Samples written after sequence number ``seq``, oldest first."""
        digests = [as_text(d) for d in self.redis.zrangebyscore(self.keys.labels_log, f"({seq}", "+inf")]
        return self._load(digests)

    def all(self) -> list[Sample]:
        return self._load([as_text(d) for d in self.redis.zrange(self.keys.labels_log, 0, -1)])

    def _load(self, digests: list[str]) -> list[Sample]:
        if not digests:
            return []
        out = []
        for digest, raw in zip(digests, self.redis.hmget(self.keys.labels, digests), strict=True):
            if raw is None:
                continue
            data: dict[str, Any] = json.loads(raw)
            text = data.get("text")
            out.append(
                Sample(
                    digest,
                    int(data["label"]),
                    data["source"],
                    data["path"],
                    int(data["seq"]),
                    float(data["time"]),
                    str(text) if text is not None else None,
                )
            )
        return out

    def images(self, digests: list[str]) -> list[bytes | None]:
        if not digests:
            return []
        return [
            v if isinstance(v, bytes) else None for v in self.redis.mget([self.keys.label_image(d) for d in digests])
        ]
