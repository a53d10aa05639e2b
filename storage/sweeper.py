"""The sweeper: a job whose message was lost still completes.

kombu's Redis transport takes a message off the queue (BRPOP) and only then records it as
unacknowledged; a worker SIGKILLed between the two loses the message, and nothing else would ever
notice: its job stops short for good. The sweeper notices and requeues exactly the job's items
that have no result, from the job's manifest, through the same ``queue.enqueue`` that submit and
resume use, one message per chunk that lost items.

It requeues a job only when all of these hold, on two sweeps in a row at least ``CONFIRM_GAP_S``
apart, with the job unchanged between them (the rules: storage/sweep_rules.py): the job is
neither complete nor cancelled, every message of it was queued (not ``submitting``: an
interrupted submit is `submit --resume`'s), it wrote no result for ``stall_s`` seconds, and no
message of it is queued or unacknowledged in the broker (storage/broker.py). A requeue is
claimed by sweep_claim.lua, which checks the sweep lock's fencing token and that the job still
has the counters the sweep read, so one sweeper requeues it, once. Being wrong costs only work,
never a count: result writes are idempotent per (job, index) (write_results.lua), so an item
that was not lost after all is merely recognised twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from storage.broker import InFlight, in_flight
from storage.jobs import Jobs, script
from storage.lifecycle import Lifecycle
from storage.lock import Lease, LockHeldError, held
from storage.sweep_rules import JobView, Seen, Verdict, confirm, triage
from storage.utils import as_text

__all__ = ["Requeue", "SweepReport", "Sweeper", "job_requeued", "sweep_locked"]

log = logging.getLogger(__name__)

INDEX_PAGE = 1000
_FIELDS = ("total", "done", "state", "created", "updated", "chunk")

Send = Callable[[str, list[list[Any]]], None]


@dataclass(frozen=True)
class Requeue:
    job: str
    items: int
    messages: int


@dataclass
class SweepReport:
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    requeued: list[Requeue] = field(default_factory=list)
    broker_messages: int | None = None  # messages read from the broker (None: no job needed a look)
    dry_run: bool = False

    @property
    def requeued_items(self) -> int:
        return sum(r.items for r in self.requeued)

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for verdict in self.verdicts.values():
            counts[verdict] = counts.get(verdict, 0) + 1
        return {
            "dry_run": self.dry_run,
            "jobs": counts,
            "broker_messages": self.broker_messages,
            "requeued": [asdict(r) for r in self.requeued],
            "requeued_items": self.requeued_items,
        }


class Sweeper:
    """One sweep at a time over the indexed jobs (``Keys.jobs_active``); ``send(job, items)`` queues
    one message (``queue.enqueue``). A dry run reads the same and writes nothing: its first
    observations stay in memory, for a second dry sweep of the same Sweeper to confirm."""

    def __init__(self, jobs: Jobs, queue: str, send: Send, stall_s: float, *, dry_run: bool = False) -> None:
        self.jobs = jobs
        self.redis = jobs.redis
        self.keys = jobs.keys
        self.queue = queue
        self.send = send
        self.stall_s = stall_s
        self.dry_run = dry_run
        self.lifecycle = Lifecycle(jobs)
        self._claim = script(jobs.redis, "sweep_claim.lua")
        self._dry_seen: dict[str, Seen] = {}

    def sweep(self, lease: Lease | None, now: float | None = None) -> SweepReport:
        """Look at every indexed job once; requeue those confirmed lost. ``lease`` is the sweep
        lock's (required unless this is a dry run)."""
        if lease is None and not self.dry_run:
            raise ValueError("a sweep that requeues must hold the sweep lock (storage.lock.held)")
        now = time.time() if now is None else now
        report = SweepReport(dry_run=self.dry_run)
        views = self._views()
        stalled = self._triage(views, now, report)
        if stalled:
            self._confirm(stalled, now, report)
        self._forget(report.verdicts)
        for job, verdict in report.verdicts.items():
            view = views[job]
            if verdict is Verdict.REQUEUE and view is not None and (done := self._requeue(view, lease, now)):
                report.requeued.append(done)
        return report

    # Deciding
    def _triage(self, views: dict[str, JobView | None], now: float, report: SweepReport) -> list[JobView]:
        """Verdicts that need no look at the broker; returns the stalled jobs, which do."""
        stalled: list[JobView] = []
        for job, view in views.items():
            verdict = triage(view, now, self.stall_s)
            if verdict is None and view is not None:
                stalled.append(view)
            else:
                report.verdicts[job] = verdict or Verdict.FINISHED
        return stalled

    def _confirm(self, stalled: list[JobView], now: float, report: SweepReport) -> None:
        """One read of the broker for every stalled job; record the jobs found idle for the first time."""
        flight: InFlight = in_flight(self.redis, self.keys, self.queue)
        report.broker_messages = flight.messages
        if flight.unreadable:
            log.warning("sweep: %d broker message(s) name no readable job; requeuing nothing", flight.unreadable)
        seen = self._seen([v.job for v in stalled])
        for view in stalled:
            report.verdicts[view.job] = confirm(view, seen.get(view.job), flight.holds(view.job), now)
        self._observe([v for v in stalled if report.verdicts[v.job] is Verdict.IDLE], seen, now)

    # Reading
    def _views(self) -> dict[str, JobView | None]:
        """Every indexed job as stored (None for one that expired), a page of the index at a time."""
        out: dict[str, JobView | None] = {}
        start = 0
        while names := [as_text(n) for n in self.redis.zrange(self.keys.jobs_active, start, start + INDEX_PAGE - 1)]:
            pipe = self.redis.pipeline(transaction=False)
            for job in names:
                pipe.hmget(self.keys.job(job), _FIELDS)
            for job, raw in zip(names, pipe.execute(), strict=True):
                out[job] = _view(job, raw)
            start += len(names)
        return out

    def _seen(self, jobs: list[str]) -> dict[str, Seen]:
        raws = self.redis.hmget(self.keys.sweep_seen, jobs) if jobs else []
        stored = {job: Seen(**json.loads(raw)) for job, raw in zip(jobs, raws, strict=True) if raw is not None}
        return stored | {job: s for job, s in self._dry_seen.items() if job in jobs}

    # Writing
    def _observe(self, idle: list[JobView], seen: dict[str, Seen], now: float) -> None:
        """Record the first sweep that finds each job idle (a matching record keeps its older time)."""
        fresh = {v.job: Seen(v.done, v.updated, now) for v in idle if not (v.job in seen and seen[v.job].matches(v))}
        if not fresh:
            return
        if self.dry_run:
            self._dry_seen.update(fresh)
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.sweep_seen, mapping={job: json.dumps(asdict(s)) for job, s in fresh.items()})
        pipe.expire(self.keys.sweep_seen, self.jobs.ttl_s)
        pipe.execute()

    def _forget(self, verdicts: dict[str, Verdict]) -> None:
        """Drop observations of jobs that moved, or are queued again; drop finished jobs from the index."""
        if self.dry_run:
            return
        moved = [job for job, v in verdicts.items() if v not in (Verdict.IDLE, Verdict.REQUEUE)]
        finished = [job for job, v in verdicts.items() if v is Verdict.FINISHED]
        pipe = self.redis.pipeline(transaction=False)
        if moved:
            pipe.hdel(self.keys.sweep_seen, *moved)
        if finished:
            pipe.zrem(self.keys.jobs_active, *finished)
        pipe.execute()

    def _requeue(self, view: JobView, lease: Lease | None, now: float) -> Requeue | None:
        """Claim the job's requeue (fenced), then queue its items without a result, one message per
        chunk that lost any. Claim first: a sweeper dying before it sends leaves the job stalled
        and claimed, so a later sweep requeues it again; never a requeue without a claim."""
        if not self.dry_run:
            assert lease is not None
            args = [lease.token, view.job, view.done, view.updated, now]
            claimed = int(self._claim(keys=[lease.key, self.keys.job(view.job), self.keys.sweep_seen], args=args))
            if claimed != 1:
                log.info("sweep: not requeuing job %s (%s)", view.job, "lock lost" if claimed < 0 else "it moved")
                return None
        items = messages = 0
        for group in self._groups(view):
            if not self.dry_run:
                self.send(view.job, group)
            items += len(group)
            messages += 1
        if not self.dry_run:
            self.redis.hincrby(self.keys.job(view.job), "requeued", items)
            log.warning(
                "sweep: job %s stalled at %d/%d with none of its messages in the broker: requeued %d items "
                "in %d messages",
                view.job,
                view.done,
                view.total,
                items,
                messages,
                extra={"job": view.job, "items": items, "messages": messages},
            )
        return Requeue(view.job, items, messages)

    def _groups(self, view: JobView) -> Iterator[list[list[Any]]]:
        """The job's items without a result, grouped by the chunk (message) they were queued in."""
        group: list[list[Any]] = []
        for page in self.lifecycle.unfinished(view.job, view.total):
            for index, digest, path in page:
                if group and group[0][0] // view.chunk != index // view.chunk:
                    yield group
                    group = []
                group.append([index, digest, path])
        if group:
            yield group


def sweep_locked(sweeper: Sweeper, lock_ttl_s: float, pace_s: float | None = None) -> SweepReport | None:
    """One sweep under the sweep lock, so two sweepers never requeue the same job. None when another
    sweeper holds the lock, or, with ``pace_s``, when one began a paced sweep within ``pace_s``
    seconds (each worker tries every interval; together they sweep about once an interval: the
    pace key lives 90% of it, so one worker's own next turn is never skipped)."""
    client, keys = sweeper.redis, sweeper.keys
    if pace_s and client.exists(keys.sweep_paced):
        return None
    try:
        with held(client, keys.sweep_lock, keys.sweep_fence, lock_ttl_s, "sweep") as lease:
            if pace_s and not client.set(keys.sweep_paced, lease.token, px=max(1, int(pace_s * 900)), nx=True):
                return None
            return sweeper.sweep(lease)
    except LockHeldError:
        return None


def job_requeued(jobs: Jobs, job: str) -> int:
    """Items of ``job`` the sweeper has requeued (0 when none, or the job is gone)."""
    return int(jobs.redis.hget(jobs.keys.job(job), "requeued") or 0)


def _view(job: str, raw: list[Any]) -> JobView | None:
    data = dict(zip(_FIELDS, (None if v is None else as_text(v) for v in raw), strict=True))
    if data["total"] is None:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return JobView(
            job=job,
            state=data["state"],
            total=int(data["total"] or 0),
            done=int(data["done"] or 0),
            created=float(data["created"] or 0),
            updated=data["updated"] or "",
            chunk=max(1, int(data["chunk"] or 1)),
        )
    return None
