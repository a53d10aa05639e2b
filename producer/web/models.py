"""The models' side of the desk: versions with their gate figures, who serves what, promote,
roll back, and the retrain button.

The retrain runs ``trainer retrain --json`` as a child process: exactly the command-line retrain,
under the same registry lock, and the web server never imports torch. One runs at a time per
server; its outcome (the command's JSON summary, or its error) is kept until the next.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from config.settings import Settings
from storage import workers
from storage.registry import Registry, VersionInfo

__all__ = ["RetrainRunner", "RetrainState", "overview", "promote", "rollback"]

# Gate figures as the registry records them: the base set, and the held-out labelled samples.
BASE_FIGURES = ("base_heldout_accuracy_after", "test_accuracy", "val_accuracy")
LABELLED_FIGURE = "new_heldout_accuracy_after"


def figures(info: VersionInfo) -> dict[str, float | None]:
    base = next((info.metrics[k] for k in BASE_FIGURES if k in info.metrics), None)
    return {"base": base, "labelled": info.metrics.get(LABELLED_FIGURE)}


def overview(registry: Registry) -> dict[str, Any]:
    """Every version (oldest first) with its gate figures, the current one, and which live
    workers serve which version."""
    serving: dict[str, list[str]] = {}
    for state in workers.list_workers(registry.redis, registry.keys):
        serving.setdefault(state.version or "none", []).append(state.hostname)
    versions = [
        {
            "version": info.version,
            "status": info.status,
            "reason": info.reason,
            "parent": info.parent,
            "created": info.created,
            "pruned": info.pruned,
            "figures": figures(info),
            "metrics": info.metrics,
            "workers": sorted(serving.get(info.version, [])),
        }
        for info in registry.versions()
    ]
    return {"current": registry.current(), "versions": versions, "serving": serving}


def promote(registry: Registry, settings: Settings, version: str) -> VersionInfo:
    """Make ``version`` current (it must still have its weights), under the registry lock."""
    with registry.lock(settings.lock_ttl_s, "promote") as lease:
        return registry.set_current(version, token=lease.token)


def rollback(registry: Registry, settings: Settings, version: str | None) -> dict[str, Any]:
    """As `trainer rollback`: back to ``version``, by default the current version's parent."""
    with registry.lock(settings.lock_ttl_s, "rollback") as lease:
        current = registry.info()
        target = version or current.parent
        if not target:
            raise ValueError(f"{current.version} has no parent to roll back to; name a version")
        info = registry.set_current(target, token=lease.token)
    return {"current": info.version, "was": current.version, "labels_upto": info.labels_upto}


class RetrainState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Outcome:
    state: RetrainState = RetrainState.IDLE
    started: float | None = None
    finished: float | None = None
    by: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def trainer_command() -> list[str]:
    """The `trainer` console script beside this Python, else the module run by this Python."""
    script = Path(sys.executable).with_name("trainer")
    if script.exists():
        return [str(script)]
    found = shutil.which("trainer")
    return [found] if found else [sys.executable, "-m", "trainer.cli"]


class RetrainRunner:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env  # None: this process's environment (the same INKQ_* settings)
        self.outcome = Outcome()
        self._lock = threading.Lock()

    def start(self, by: str) -> Outcome:
        with self._lock:
            if self.outcome.state == RetrainState.RUNNING:
                return self.outcome
            self.outcome = Outcome(RetrainState.RUNNING, started=time.time(), by=by)
        threading.Thread(target=self._run, name="desk-retrain", daemon=True).start()
        return self.outcome

    def _run(self) -> None:
        env = dict(os.environ if self.env is None else self.env) | {"INKQ_PROGRESS": "0"}
        try:
            run = subprocess.run(
                [*trainer_command(), "retrain", "--json"], capture_output=True, text=True, env=env, check=False
            )
        except OSError as exc:
            self._finish(RetrainState.FAILED, {}, f"cannot start `trainer retrain`: {exc}")
            return
        lines = run.stdout.strip().splitlines()
        if run.returncode != 0 or not lines:
            tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
            self._finish(RetrainState.FAILED, {}, f"`trainer retrain` exited {run.returncode}: {tail}")
            return
        try:
            summary = json.loads(lines[-1])
        except json.JSONDecodeError:
            self._finish(RetrainState.FAILED, {}, f"`trainer retrain` printed no JSON summary: {lines[-1][:200]}")
            return
        self._finish(RetrainState.DONE, summary, None)

    def _finish(self, state: RetrainState, summary: dict[str, Any], error: str | None) -> None:
        with self._lock:
            self.outcome.state, self.outcome.summary, self.outcome.error = state, summary, error
            self.outcome.finished = time.time()
