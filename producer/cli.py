"""`producer`: queue folders of scans, follow jobs, read results."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from config.cli import Group, emit_json, setup
from config.settings import Settings, env_var
from producer.client import Client, count_candidates
from producer.deadletters import dead_letters
from producer.democli import demo_command, finetune_demo_command
from producer.fieldopts import field_options
from producer.formats import write_results
from producer.healthcli import health, probe_command
from producer.jobcli import announce, cancel, check_settled, hint, resumable_on_interrupt
from producer.labelcli import label, review
from producer.progress import Mode, follow, mode_for
from producer.servecli import serve
from producer.sweepcli import sweep
from storage.priority import Priority


@click.group(cls=Group)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Queue handwriting scans for recognition and read the results (settings: INKQ_* variables)."""
    setup(ctx)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="INKQ_JSON",
    show_envvar=True,
    help='Print {"job": ID, "items": N, "rejected": [...]} instead of the job id.',
)
@click.option(
    "--wait/--no-wait",
    "wait_for_room",
    default=True,
    envvar="INKQ_SUBMIT_WAIT",
    show_envvar=True,
    help="When the queue is full (INKQ_QUEUE_MAX_MESSAGES), wait for room or fail at once.",
)
@click.option(
    "--chunk-size",
    envvar=env_var("chunk_size"),
    show_envvar=True,
    type=click.IntRange(min=1),
    help="Images per queued message.",
)
@click.option(
    "--progress/--no-progress",
    envvar="INKQ_PROGRESS",
    show_envvar=True,
    default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)
@click.option(
    "--priority",
    type=click.Choice([p.value for p in Priority]),
    default=Priority.NORMAL.value,
    envvar="INKQ_SUBMIT_PRIORITY",
    show_envvar=True,
    help="Workers serve high before normal before low (low still advances).",
)
@click.option(
    "--resume",
    metavar="JOB",
    envvar="INKQ_SUBMIT_RESUME",
    show_envvar=True,
    help="Queue the items of JOB whose submit was interrupted (instead of PATHS).",
)
@field_options
@click.pass_obj
def submit(
    settings: Settings,
    paths: tuple[str, ...],
    as_json: bool,
    wait_for_room: bool,
    chunk_size: int | None,
    progress: bool | None,
    priority: str,
    resume: str | None,
    read: dict[str, Any] | None,
) -> None:
    """Queue every image under PATHS (files or folders, recursively) as one job; print its id.

    The job id goes to stderr as soon as the job exists, before anything is queued: if the
    submit stops half-way, `producer submit --resume JOB` queues exactly what is missing.
    """
    if bool(paths) == bool(resume):
        raise click.UsageError("give PATHS to submit, or --resume JOB (not both)")
    client = Client(settings.replace(chunk_size=chunk_size), priority)
    show = not resume and (sys.stderr.isatty() if progress is None else progress)
    seen: list[str] = []
    started = announce("resuming," if resume else "submitting", seen)
    with resumable_on_interrupt(seen):
        if show:
            with click.progressbar(length=count_candidates(paths), label="submitting", file=sys.stderr) as bar:
                report = client.submit(
                    list(paths), wait_for_room=wait_for_room, progress=bar.update, started=started, read=read
                )
        else:
            report = client.submit(list(paths), wait_for_room=wait_for_room, started=started, resume=resume, read=read)
    for bad in report.rejected:
        click.echo(f"rejected {bad['path']}: {bad['error']}", err=True)
    if as_json:
        emit_json({"job": report.job, "items": report.items, "rejected": report.rejected})
    else:
        click.echo(report.job)


def progress_option(command: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--progress/--no-progress",
        envvar="INKQ_PROGRESS",
        show_envvar=True,
        default=None,
        help="While waiting, progress on stderr: a bar (forced by --progress) on a terminal, "
        "plain lines otherwise; --no-progress shows none.",
    )(command)


@cli.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, envvar="INKQ_JSON", show_envvar=True)
@click.option(
    "--watch",
    is_flag=True,
    envvar="INKQ_STATUS_WATCH",
    show_envvar=True,
    help="Follow the job until it settles; exit status as `results --wait`.",
)
@click.option(
    "--timeout",
    type=float,
    envvar="INKQ_STATUS_TIMEOUT",
    show_envvar=True,
    help="With --watch: give up after this many seconds (exit status 2).",
)
@progress_option
@click.pass_obj
def status(
    settings: Settings, job: str, as_json: bool, watch: bool, timeout: float | None, progress: bool | None
) -> None:
    """Show a job's progress: total, done, failed, state."""
    client = Client(settings)
    if watch:
        s = follow(client, job, timeout, Mode.NONE if as_json else mode_for(sys.stderr, progress), sys.stderr)
    else:
        s = client.status(job)
    if as_json:
        emit_json(s.as_dict())
    else:
        click.echo(f"{s.job}: {s.state}, {s.done}/{s.total} done, {s.failed} failed")
        if hint(s) and not watch:
            click.echo(hint(s), err=True)
    if watch:
        check_settled(s, timeout)


@cli.command()
@click.argument("job")
@click.option(
    "--wait",
    is_flag=True,
    envvar="INKQ_RESULTS_WAIT",
    show_envvar=True,
    help="Wait until the job is complete before printing.",
)
@click.option(
    "--timeout",
    type=float,
    envvar="INKQ_RESULTS_TIMEOUT",
    show_envvar=True,
    help="With --wait: give up after this many seconds (exit status 2).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    envvar="INKQ_RESULTS_FORMAT",
    show_envvar=True,
)
@progress_option
@click.pass_obj
def results(settings: Settings, job: str, wait: bool, timeout: float | None, fmt: str, progress: bool | None) -> None:
    """Print one result per item (JSON lines or CSV), in submission order, as they are read."""
    client = Client(settings)
    if wait:
        check_settled(follow(client, job, timeout, mode_for(sys.stderr, progress), sys.stderr), timeout)
    elif hint(s := client.status(job)):
        click.echo(hint(s), err=True)
    fields = client.jobs.reading(job).get("kind") == "field"
    write_results(client.iter_results(job), fmt, sys.stdout, fields=fields)


for command in (
    cancel,
    label,
    review,
    dead_letters,
    sweep,
    health,
    probe_command,
    serve,
    demo_command,
    finetune_demo_command,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="producer")


if __name__ == "__main__":
    main()
