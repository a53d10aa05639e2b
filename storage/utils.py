"""Small helpers shared by the storage modules."""

from __future__ import annotations

__all__ = ["as_text"]


def as_text(raw: object) -> str:
    """A Redis reply as str: clients run without decode_responses (images and weights are bytes),
    so text comes back as bytes; None, a missing value, becomes ""."""
    if isinstance(raw, bytes):
        return raw.decode()
    return "" if raw is None else str(raw)
