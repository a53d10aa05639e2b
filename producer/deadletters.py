"""`producer dead-letters`: list the messages that failed INKQ_MAX_DELIVERIES times, and requeue them."""

from __future__ import annotations

import datetime

import click

from config.cli import emit_json
from config.errors import InkqError
from config.settings import Settings
from storage import queue
from storage.connection import connect
from storage.deadletters import DeadLetter, DeadLetters
from storage.keys import Keys

__all__ = ["dead_letters", "requeue"]


def requeue(settings: Settings, letters: DeadLetters, letter: DeadLetter) -> None:
    """Queue a new message with the dead letter's items, then forget the dead letter.

    In that order: a crash in between leaves the dead letter listed and the items queued, and
    the results they produce overwrite their error results without double counting.
    """
    if letter.job is None:
        raise InkqError(f"dead letter {letter.task_id} names no job; nothing to requeue (drop it by hand)")
    queue.enqueue(queue.make_app(settings), letter.job, letter.items)
    letters.remove(letter.task_id)


@click.command("dead-letters")
@click.option("--json", "as_json", is_flag=True, envvar="INKQ_JSON", show_envvar=True, help="One JSON object per line.")
@click.option("--requeue", "requeue_id", metavar="ID", help="Queue this dead letter's items again.")
@click.option("--requeue-all", is_flag=True, help="Queue every dead letter's items again.")
@click.pass_obj
def dead_letters(settings: Settings, as_json: bool, requeue_id: str | None, requeue_all: bool) -> None:
    """List messages that failed INKQ_MAX_DELIVERIES times (their items have an error result), or
    requeue them once the cause is fixed: their items are recognised again and their results replaced."""
    if requeue_id and requeue_all:
        raise click.UsageError("give --requeue ID or --requeue-all, not both")
    letters = DeadLetters(connect(settings), Keys(settings.key_prefix), settings.result_ttl_s)
    if requeue_id or requeue_all:
        chosen = letters.all() if requeue_all else [letters.get(str(requeue_id))]
        if chosen == [None]:
            raise InkqError(f"no dead letter {requeue_id!r}; `producer dead-letters` lists them")
        for letter in chosen:
            if letter is not None:
                requeue(settings, letters, letter)
                _emit(letter, as_json, "requeued ")
        return
    for letter in letters.all():
        _emit(letter, as_json)


def _emit(letter: DeadLetter, as_json: bool, verb: str = "") -> None:
    if as_json:
        row = letter.as_dict()
        del row["items"]
        emit_json(row | ({"requeued": True} if verb else {}))
        return
    when = datetime.datetime.fromtimestamp(letter.at, datetime.UTC).isoformat(timespec="seconds")
    click.echo(
        f"{verb}{letter.task_id} job={letter.job} items={len(letter.items)} attempts={letter.attempts} "
        f"at={when} error={letter.error}"
    )
