"""Progress while `producer status --watch` and `producer results --wait` wait for a job.

On a terminal a tqdm bar with rate and ETA; otherwise (a log, a pipe, CI) a plain line every
LINE_EVERY_S seconds and one when the job settles; nothing when asked for none (``--json``,
``--no-progress``). Always on stderr, so stdout carries only results. Waiting is Jobs.wait in
slices of TICK_S: woken at once when the job completes, re-reading the counters in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol, TextIO

from tqdm import tqdm

from storage.jobs import JobStatus

__all__ = ["LINE_EVERY_S", "TICK_S", "Lines", "Mode", "follow", "mode_for"]

TICK_S = 0.5  # how often the counters are re-read while the job runs
LINE_EVERY_S = 5.0  # how often a plain progress line is written when stderr is not a terminal


class Mode(StrEnum):
    BAR = "bar"
    LINES = "lines"
    NONE = "none"


class Waiter(Protocol):
    def status(self, job: str) -> JobStatus: ...

    def wait(self, job: str, timeout: float | None = None) -> JobStatus: ...


def mode_for(stream: TextIO, progress: bool | None) -> Mode:
    """``--progress`` forces the bar, ``--no-progress`` shows nothing; by default a bar on a
    terminal and plain lines otherwise."""
    if progress is False:
        return Mode.NONE
    return Mode.BAR if progress or stream.isatty() else Mode.LINES


class Lines:
    """Plain progress lines: state, counts, the rate seen while watching, and the ETA it gives."""

    def __init__(self, stream: TextIO, first: JobStatus, now: float, every_s: float = LINE_EVERY_S) -> None:
        self.stream = stream
        self.start, self.done0 = now, first.done
        self.every_s = every_s
        self.last: float | None = None
        self.shown: tuple[int, str] | None = None

    def update(self, status: JobStatus, now: float) -> None:
        if self.last is None or now - self.last >= self.every_s:
            self.write(status, now)

    def close(self, status: JobStatus, now: float) -> None:
        if self.shown != (status.done, status.state):  # the final counts, once
            self.write(status, now)

    def write(self, status: JobStatus, now: float) -> None:
        self.last, self.shown = now, (status.done, status.state)
        self.stream.write(self.line(status, now) + "\n")
        self.stream.flush()

    def line(self, status: JobStatus, now: float) -> str:
        text = f"job {status.job}: {status.state}, {status.done}/{status.total} done, {status.failed} failed"
        elapsed = now - self.start
        rate = (status.done - self.done0) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            text += f", {rate:.1f} images/s"
            if not status.settled:
                text += f", ETA {tqdm.format_interval((status.total - status.done) / rate)}"
        return text


class _Bar:
    def __init__(self, stream: TextIO, first: JobStatus) -> None:
        self.bar = tqdm(
            total=first.total, initial=first.done, unit="img", desc=f"job {first.job[:8]}", file=stream, leave=True
        )

    def update(self, status: JobStatus, now: float) -> None:
        self.bar.set_postfix_str(f"{status.state}, {status.failed} failed", refresh=False)
        self.bar.update(status.done - self.bar.n)

    def close(self, status: JobStatus, now: float) -> None:
        self.update(status, now)
        self.bar.close()


def follow(
    client: Waiter,
    job: str,
    timeout: float | None,
    mode: Mode,
    stream: TextIO,
    clock: Callable[[], float] = time.monotonic,
) -> JobStatus:
    """Wait until ``job`` settles or ``timeout`` seconds pass, showing progress; the last status."""
    if mode is Mode.NONE:
        return client.wait(job, timeout)
    deadline = None if timeout is None else clock() + timeout
    status = client.status(job)
    view: Lines | _Bar = Lines(stream, status, clock()) if mode is Mode.LINES else _Bar(stream, status)
    try:
        while not status.settled:
            left = TICK_S if deadline is None else min(TICK_S, deadline - clock())
            if left <= 0:
                break
            status = client.wait(job, left)
            view.update(status, clock())
    finally:
        view.close(status, clock())
    return status
