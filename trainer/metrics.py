"""`trainer watch`'s Prometheus metrics, on a registry of its own (served by config/metrics_http.py
with the worker's token rules): retrain runs by outcome, the promotion gate's figures, the last
run's time and length, the labels waiting for a run, and the watch loop's last check (its health).

Outcomes: ``promoted`` and ``rejected`` (a candidate was trained and judged by the gate),
``no_candidate`` (nothing new to learn from, or no held-out labels to judge by), ``skipped``
(another run held the retrain lock, or a fenced publish lost the race).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from storage.labels import Labels

__all__ = ["OUTCOMES", "TrainerMetrics", "outcome_of"]

OUTCOMES = ("promoted", "rejected", "no_candidate", "skipped")
# /healthz fails when the watch loop has not finished a check for this many polls: it is stuck, or
# Redis is unreachable (each check reads it). A retrain run counts as one long check.
SILENT_POLLS = 3


def outcome_of(summary: dict[str, Any]) -> str:
    """The outcome class of one entry ``trainer.watch.watch`` yields."""
    if summary.get("skipped"):
        return "skipped"
    if summary.get("version") is None:
        return "no_candidate"
    return "promoted" if summary.get("promoted") else "rejected"


class TrainerMetrics:
    """Every metric `trainer watch` exports; ``ran`` and ``checked`` update them from the loop."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.runs = Counter(
            "inkq_retrain_runs",
            "Retrain runs, by outcome: promoted, rejected, no_candidate, skipped.",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:  # every series exists from the start, so rate() sees its first run
            self.runs.labels(outcome=outcome)
        self.last_run = Gauge(
            "inkq_retrain_last_run_timestamp_seconds", "Unix time the last retrain run ended (0: none yet).", registry=r
        )
        self.last_run_seconds = Gauge(
            "inkq_retrain_last_run_seconds", "Seconds the last run that trained a candidate took.", registry=r
        )
        self.gate = Gauge(
            "inkq_retrain_gate_accuracy",
            "The promotion gate's figures of the last candidate: accuracy on the held-out labels (set=new) and "
            "on the base held-out images (set=base), before and after fine-tuning (stage).",
            ["set", "stage"],
            registry=r,
        )
        self.new_labels = Gauge(
            "inkq_retrain_new_labels",
            "Labelled samples the last run learned from (held-out ones excluded).",
            registry=r,
        )
        self.labels_waiting = Gauge(
            "inkq_retrain_labels_waiting",
            "Labels that arrived since the last run tried them, at the last check.",
            registry=r,
        )
        self.last_check = Gauge(
            "inkq_retrain_last_check_timestamp_seconds", "Unix time the watch loop last finished a check.", registry=r
        )
        self._checked_at: float | None = None
        self._running_since: float | None = None

    def running(self) -> None:
        """A retrain run starts: /healthz stays healthy while it lasts (it makes no checks)."""
        self._running_since = time.monotonic()

    def ran(self, summary: dict[str, Any]) -> None:
        """One retrain run ended with ``summary`` (a ``trainer.watch.watch`` outcome)."""
        self._running_since = None
        self.runs.labels(outcome=outcome_of(summary)).inc()
        self.last_run.set(time.time())
        if "new_labels" in summary:
            self.new_labels.set(summary["new_labels"])
        if summary.get("version") is None:
            return
        self.last_run_seconds.set(summary.get("seconds", 0.0))
        for stage in ("before", "after"):
            figures = summary.get(stage, {})
            for name, value in (("new", "new_heldout_accuracy"), ("base", "base_heldout_accuracy")):
                if value in figures:
                    self.gate.labels(set=name, stage=stage).set(figures[value])

    def checked(self, labels: Labels) -> None:
        """The watch loop finished a check (and a run, if one was due)."""
        self.labels_waiting.set(max(0, labels.latest_seq() - labels.watermark("tried")))
        self.last_check.set(time.time())
        self._checked_at = time.monotonic()

    def health(self, poll_s: float) -> tuple[bool, str]:
        """/healthz: healthy while the loop finishes its checks (so Redis answers)."""
        if self._running_since is not None:
            return True, f"retraining for {time.monotonic() - self._running_since:.0f}s"
        if self._checked_at is None:
            return False, "first check not finished (Redis unreachable?)"
        silent = time.monotonic() - self._checked_at
        if silent > SILENT_POLLS * poll_s + 60:
            return False, f"no check finished for {silent:.0f}s: Redis unreachable or the loop is stuck"
        return True, f"watching; last check {silent:.0f}s ago"
