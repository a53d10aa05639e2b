"""Which versions keep their weights: the current one, its ancestors, and the newest few.

A version's weights are ~45 MB, and every retrain publishes one, promoted or not. After each
publish the registry prunes the weights of every version this policy does not keep; the
metadata stays (marked ``pruned``) so the history stays readable.
"""

from __future__ import annotations

from collections.abc import Sequence

from storage.registry import VersionInfo, VersionStatus

__all__ = ["to_keep", "to_prune"]


def to_keep(versions: Sequence[VersionInfo], current: str | None, keep_last: int) -> set[str]:
    """Names whose weights stay: ``current``, its chain of parents, and the newest ``keep_last``
    versions that were not rejected (rollback targets). ``versions`` is oldest first."""
    by_name = {v.version: v for v in versions}
    keep: set[str] = set()
    name = current
    while name and name not in keep:  # the parent chain (guarded against a cycle)
        keep.add(name)
        parent = by_name.get(name)
        name = parent.parent if parent else None
    usable = [v.version for v in versions if v.status != VersionStatus.REJECTED]
    keep.update(usable[-keep_last:] if keep_last > 0 else [])
    return keep


def to_prune(versions: Sequence[VersionInfo], current: str | None, keep_last: int) -> list[VersionInfo]:
    """Versions that still have weights but are not kept."""
    keep = to_keep(versions, current, keep_last)
    return [v for v in versions if not v.pruned and v.version not in keep]
