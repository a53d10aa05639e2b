"""Keep the AOT package store (recognizer/aot.py) from growing without bound.

Every published version (each retrain publishes one), precision, torch upgrade and package format
adds packages of tens of megabytes that nothing may ever load again. A package's manifest is
touched each time a worker loads it, so its modification time is its last use; the background
builder (recognizer/aotbuild.py) deletes, after each build, the packages nobody has loaded or
built for ``INKQ_AOT_KEEP_DAYS``, the leftovers of builds that died, and version directories left
empty. A package deleted while some worker still wanted it costs that worker one compile.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pruned", "mark_used", "prune"]

log = logging.getLogger(__name__)

# A temporary file older than this belongs to a build that died: builds end within an hour
# (worker/packages.py BUILD_TIMEOUT_S).
STALE_TMP_S = 2 * 3600.0


@dataclass
class Pruned:
    files: int = 0
    bytes: int = 0
    directories: int = 0

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            self.files, self.bytes = self.files + 1, self.bytes + size


def mark_used(manifest: Path) -> None:
    """Record that a package was loaded now (a read-only cache keeps its old time: harmless)."""
    with contextlib.suppress(OSError):
        os.utime(manifest)


def prune(cache_dir: Path, keep_s: float, now: float | None = None) -> Pruned:
    """Delete from ``cache_dir/aot`` every package (manifest first, then its bytes) last loaded or
    built more than ``keep_s`` ago, bytes whose manifest is gone as long ago, dead builds'
    temporary files, and version directories left empty."""
    now = time.time() if now is None else now
    pruned = Pruned()
    root = cache_dir / "aot"
    if not root.is_dir():
        return pruned
    for version in sorted(p for p in root.iterdir() if p.is_dir()):
        _prune_version(version, now - keep_s, now - STALE_TMP_S, pruned)
        _remove_if_empty(version, pruned)
    if pruned.files:
        log.info(
            "pruned %d AOT package files (%.1f MB) unused for %.0f days, and %d empty version directories",
            pruned.files,
            pruned.bytes / 1e6,
            keep_s / 86400,
            pruned.directories,
        )
    return pruned


def _modified(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def _prune_version(version: Path, cutoff: float, tmp_cutoff: float, pruned: Pruned) -> None:
    for manifest in version.glob("*.json"):
        if (seen := _modified(manifest)) is not None and seen < cutoff:
            # Manifest first: a manifest is never left beside missing bytes.
            pruned.remove(manifest)
            pruned.remove(manifest.with_suffix(".pt2"))
    for package in version.glob("*.pt2"):
        if not package.with_suffix(".json").exists() and (seen := _modified(package)) is not None and seen < cutoff:
            pruned.remove(package)
    for tmp in version.glob(".*.tmp.*"):
        if (seen := _modified(tmp)) is not None and seen < tmp_cutoff:
            pruned.remove(tmp)


def _remove_if_empty(version: Path, pruned: Pruned) -> None:
    """Remove a directory holding nothing but its build lock, unless a builder holds the lock."""
    lock = version / ".lock"
    if any(p != lock for p in version.iterdir()):
        return
    try:
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a builder is starting here
            lock.unlink()
            version.rmdir()  # fails, harmlessly, if a builder wrote meanwhile
            pruned.directories += 1
    except OSError as exc:
        log.debug("left %s: %s", version, exc)
