"""The job-lifecycle side of the `producer` CLI: `cancel`, and what submit, status and results
say about an interrupted or cancelled job."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from config.cli import emit_json
from config.errors import JobInterruptedError, JobStateError
from config.settings import Settings
from producer.client import Client
from storage.jobs import JobState, JobStatus

__all__ = ["announce", "cancel", "check_settled", "hint", "resumable_on_interrupt"]


def hint(status: JobStatus) -> str:
    """What to do about a job that will not finish by itself (empty for one that will)."""
    if status.state is JobState.INTERRUPTED:
        return f"submit of job {status.job} was interrupted: run `producer submit --resume {status.job}`"
    if status.state is JobState.CANCELLED and not status.complete:
        return f"cancel of job {status.job} stopped half-way: run `producer cancel {status.job}` again"
    return ""


def check_settled(status: JobStatus, timeout: float | None) -> None:
    """After `results --wait`: exit non-zero unless the job is complete."""
    if status.complete:
        return
    if status.state is JobState.INTERRUPTED:
        raise JobInterruptedError(f"{hint(status)} ({status.done}/{status.total} done)")
    if status.state is JobState.CANCELLED:
        raise JobStateError(hint(status))
    click.echo(f"timed out after {timeout}s: {status.done}/{status.total} done", err=True)
    sys.exit(2)


def announce(verb: str, seen: list[str]) -> Callable[[str, int], None]:
    """A `started` callback: name the job on stderr before anything is queued, so that a submit
    stopped half-way leaves its user the id to resume."""

    def started(job: str, items: int) -> None:
        seen.append(job)
        click.echo(f"job {job}: {verb} {items} items", err=True)

    return started


@contextmanager
def resumable_on_interrupt(seen: list[str]) -> Iterator[None]:
    """Ctrl-C during a submit: say how to resume, exit 130 (no traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        if seen:
            click.echo(f"interrupted: run `producer submit --resume {seen[0]}` to queue the rest", err=True)
        sys.exit(130)


@click.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, envvar="INKQ_JSON", show_envvar=True)
@click.pass_obj
def cancel(settings: Settings, job: str, as_json: bool) -> None:
    """Stop JOB: its items without a result get a `cancelled` error and the job completes.

    Results a worker writes afterwards are ignored. Safe to repeat.
    """
    summary = Client(settings).cancel(job)
    if as_json:
        emit_json(summary)
    elif summary["was_complete"]:
        click.echo(f"{job}: already complete, nothing to cancel")
    else:
        click.echo(
            f"{job}: {summary['state']}, {summary['cancelled_items']} items cancelled, "
            f"{summary['done']}/{summary['total']} done, {summary['failed']} failed"
        )
