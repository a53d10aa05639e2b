"""`producer health` (the system at a glance, for people) and `producer probe` (one worker's
readiness as an exit code, for compose, Kubernetes and systemd). Both read Redis only
(storage/health.py); neither needs the worker's HTTP port."""

from __future__ import annotations

import sys

import click
import redis

from config.cli import emit_json
from config.settings import load_settings
from storage.connection import connect
from storage.health import Snapshot, probe, snapshot
from storage.keys import Keys

__all__ = ["health", "probe_command"]

# Exit codes of `producer probe`: 0 ready and healthy, 1 not (the reason on stderr), 2 Redis unreachable.
NOT_READY, NO_REDIS = 1, 2


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
def health(as_json: bool) -> None:
    """Queue depth, workers (ready, healthy, version, last batch), current model, jobs in progress
    and dead letters."""
    settings = load_settings()
    snap = snapshot(connect(settings), Keys(settings.key_prefix), settings.queue, settings.result_ttl_s)
    if as_json:
        emit_json(snap.as_dict())
        return
    click.echo(render(snap))


def render(snap: Snapshot) -> str:
    lines = [
        f"queue: {snap.queue['queued']} messages waiting, {snap.queue['unacked']} being worked on",
        f"current model: {snap.current_model or 'none (run `trainer train`)'}",
        f"dead letters: {snap.dead_letters}" + (" (see `producer dead-letters`)" if snap.dead_letters else ""),
        f"workers: {len(snap.workers)}" + ("" if snap.workers else " (none has a live heartbeat)"),
    ]
    for w in snap.workers:
        state = "ready" if w["ready"] else "loading"
        state += "" if w["healthy"] else ", UNHEALTHY (model stalled)"
        last = "no batch yet" if w["last_batch_s_ago"] is None else f"last batch {w['last_batch_s_ago']:.0f}s ago"
        lines.append(f"  {w['name']}: {state}; model {w['version']}; {w['items_served']} items served; {last}")
    lines.append(f"jobs in progress: {snap.jobs_in_progress_total}")
    for j in snap.jobs_in_progress:
        lines.append(f"  {j['job']}: {j['done']}/{j['total']} done, {j['failed']} failed")
    return "\n".join(lines)


@click.command("probe")
@click.argument("worker")
@click.option(
    "--max-age-s",
    type=click.FloatRange(min=1),
    default=20.0,
    show_default=True,
    help="Oldest heartbeat that still counts (workers beat every 5 s).",
)
def probe_command(worker: str, max_age_s: float) -> None:
    """Exit 0 when WORKER (its Celery node name, `name@host`) is ready and healthy; 1 when it is
    not (loading, stalled, silent), 2 when Redis cannot be reached. The reason goes to stderr."""
    settings = load_settings()
    try:
        reason = probe(connect(settings, check=False), Keys(settings.key_prefix), worker, max_age_s)
    except redis.RedisError as exc:
        click.echo(f"Redis unreachable: {type(exc).__name__}", err=True)
        sys.exit(NO_REDIS)
    if reason is not None:
        click.echo(reason, err=True)
        sys.exit(NOT_READY)
    click.echo(f"{worker} is ready and healthy")
