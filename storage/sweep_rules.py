"""The sweep's decision, as pure functions of what a sweep reads (storage/sweeper.py acts on it).

A job is requeued only on two sweeps in a row, at least ``CONFIRM_GAP_S`` apart, that find it
unchanged, neither complete nor cancelled nor still submitting, without a result written for
``stall_s`` seconds, and with no message of it in the broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from storage.jobs import JobState

__all__ = ["CONFIRM_GAP_S", "JobView", "Seen", "Verdict", "confirm", "triage"]

# The least time between the two sweeps that must both find a job idle: a message in the instant
# between BRPOP and its unacked record, or between a restore's two steps, is seen by the second.
CONFIRM_GAP_S = 1.0


class Verdict(StrEnum):
    FINISHED = "finished"  # complete, cancelled or expired: dropped from the index
    SUBMITTING = "submitting"  # still being queued, or interrupted: `producer submit --resume` finishes it
    ACTIVE = "active"  # wrote a result within the stall time
    IN_FLIGHT = "in_flight"  # stalled, but a message of it is queued or held by a worker
    IDLE = "idle"  # stalled with no message anywhere: requeued if the next sweep finds the same
    REQUEUE = "requeue"


@dataclass(frozen=True)
class JobView:
    """What a sweep reads of a job: its stored state and counters, and ``updated`` as stored (the
    time of its last result write, '' before the first) so a claim can compare it exactly."""

    job: str
    state: str | None
    total: int
    done: int
    created: float
    updated: str
    chunk: int

    @property
    def last_activity(self) -> float:
        return max(self.created, float(self.updated or 0))


@dataclass(frozen=True)
class Seen:
    """A sweep that found the job idle: its counters then, and when."""

    done: int
    updated: str
    at: float

    def matches(self, view: JobView) -> bool:
        return (self.done, self.updated) == (view.done, view.updated)


def triage(view: JobView | None, now: float, stall_s: float) -> Verdict | None:
    """The verdict that needs no look at the broker, or None for a stalled job that needs one."""
    if view is None or view.state == JobState.CANCELLED or view.done >= view.total:
        return Verdict.FINISHED
    if view.state == JobState.SUBMITTING:
        return Verdict.SUBMITTING
    if now - view.last_activity < stall_s:
        return Verdict.ACTIVE
    return None


def confirm(view: JobView, seen: Seen | None, in_broker: bool, now: float) -> Verdict:
    """A stalled job: requeue only when the previous sweep found it idle with the same counters."""
    if in_broker:
        return Verdict.IN_FLIGHT
    if seen is not None and seen.matches(view) and now - seen.at >= CONFIRM_GAP_S:
        return Verdict.REQUEUE
    return Verdict.IDLE
