"""`producer sweep`: the workers' sweep (storage/sweeper.py), run now by an operator.

Two looks at every unfinished job, ``--pause`` seconds apart, under the sweep lock: a job found
stalled with no message in the broker on both is requeued (its items without a result, from its
manifest). Workers run the same sweep every INKQ_SWEEP_INTERVAL_S; this is for an operator who
does not want to wait, or who runs no worker's sweeper, and for ``--dry-run`` inspection.
"""

from __future__ import annotations

import threading
import time

import click

from config.cli import emit_json
from config.settings import Settings, env_var
from producer.client import Client
from storage import queue
from storage.lock import Lease, LockHeldError, held
from storage.sweep_rules import CONFIRM_GAP_S
from storage.sweeper import Sweeper, SweepReport

__all__ = ["sweep", "sweep_now"]

# How long `producer sweep` waits for a worker's sweep to finish and free the lock.
LOCK_WAIT_S = 15.0


def sweep_now(settings: Settings, *, dry_run: bool, pause_s: float) -> SweepReport:
    """Two sweeps ``pause_s`` apart (under the sweep lock unless ``dry_run``); the second's
    verdicts, with what either requeued."""
    client = Client(settings)
    sweeper = Sweeper(
        client.jobs,
        settings.queue,
        lambda job, items: queue.enqueue(client.app, job, items),
        settings.sweep_stall_s,
        dry_run=dry_run,
    )
    if dry_run:
        return _twice(sweeper, None, pause_s)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            with held(
                client.redis, client.keys.sweep_lock, client.keys.sweep_fence, settings.lock_ttl_s, "sweep"
            ) as lease:
                return _twice(sweeper, lease, pause_s)
        except LockHeldError:
            if time.monotonic() > deadline:
                raise
            threading.Event().wait(0.2)  # a worker's sweep holds it for a moment


def _twice(sweeper: Sweeper, lease: Lease | None, pause_s: float) -> SweepReport:
    first = sweeper.sweep(lease)
    threading.Event().wait(pause_s)
    second = sweeper.sweep(lease)
    second.requeued = first.requeued + second.requeued
    return second


@click.command()
@click.option("--dry-run", is_flag=True, help="Say what would be requeued; change nothing.")
@click.option(
    "--pause",
    type=click.FloatRange(min=CONFIRM_GAP_S),
    default=2.0,
    show_default=True,
    help="Seconds between the two looks that must both find a job stalled with no message in the broker.",
)
@click.option(
    "--stall-s",
    type=click.FloatRange(min=0.0),
    envvar=env_var("sweep_stall_s"),
    show_envvar=True,
    help="Only jobs that wrote no result for this many seconds are looked at.",
)
@click.option("--json", "as_json", is_flag=True, envvar="INKQ_JSON", show_envvar=True)
@click.pass_obj
def sweep(settings: Settings, dry_run: bool, pause: float, stall_s: float | None, as_json: bool) -> None:
    """Requeue the missing items of jobs whose messages were lost (a worker killed between taking a
    message and recording it), as the workers' sweeper does every INKQ_SWEEP_INTERVAL_S.

    A job is requeued only when it is fully queued, unfinished, wrote no result for
    INKQ_SWEEP_STALL_S, and no message of it is queued or held by a worker on both looks. A
    duplicate is harmless: results are written idempotently.
    """
    report = sweep_now(settings.replace(sweep_stall_s=stall_s), dry_run=dry_run, pause_s=pause)
    if as_json:
        emit_json(report.as_dict())
        return
    verb = "would requeue" if dry_run else "requeued"
    for r in report.requeued:
        click.echo(f"{r.job}: {verb} {r.items} items in {r.messages} messages")
    counts = ", ".join(f"{n} {verdict}" for verdict, n in sorted(report.as_dict()["jobs"].items()))
    click.echo(
        f"swept {len(report.verdicts)} unfinished or newly finished jobs ({counts or 'none'}): "
        f"{verb} {report.requeued_items} items",
        err=True,
    )
