"""`producer label` and `producer review`: the people's side of the learning loop."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import click

from config.cli import emit_json
from config.settings import Settings
from producer.client import Client
from producer.labelling import from_csv, from_folder

__all__ = ["label", "review"]


@click.command()
@click.argument("args", nargs=-1)
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="INKQ_LABEL_CSV",
    show_envvar=True,
    help="A CSV of path,label rows.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="INKQ_LABEL_ROOT",
    show_envvar=True,
    help="With --csv: every path must lie inside this folder (default: the CSV's).",
)
@click.option("--job", envvar="INKQ_LABEL_JOB", show_envvar=True, help="Correct a result of this job...")
@click.option("--item", envvar="INKQ_LABEL_ITEM", show_envvar=True, help="...for this item (path or index).")
@click.option("--json", "as_json", is_flag=True, envvar="INKQ_JSON", show_envvar=True)
@click.pass_obj
def label(
    settings: Settings,
    args: tuple[str, ...],
    csv_file: Path | None,
    root: Path | None,
    job: str | None,
    item: str | None,
    as_json: bool,
) -> None:
    """Add labelled samples for fine-tuning. Three forms:

    \b
      producer label DIR                        DIR/<label>/*.png, labels 0-9
      producer label --csv FILE [--root DIR]    rows of path,label
      producer label --job JOB --item ITEM LABEL   correct one result

    Everything is checked first; one bad entry rejects the whole intake and nothing is stored.
    """
    client = Client(settings)
    if job or item:
        if not (job and item) or len(args) != 1:
            raise click.UsageError("a correction takes --job JOB --item ITEM and one LABEL argument")
        summary: dict[str, Any] = client.correct(job, item, args[0])
    elif csv_file:
        if args:
            raise click.UsageError("--csv takes no other arguments")
        summary = {"stored": client.label(from_csv(csv_file, root), source=f"csv:{csv_file.name}")}
    else:
        if len(args) != 1:
            raise click.UsageError("give one folder laid out as DIR/<label>/*.png (or --csv, or --job/--item)")
        summary = {"stored": client.label(from_folder(Path(args[0])), source=f"folder:{Path(args[0]).name}")}
    summary["labels_total"] = client.labels.count()
    if as_json:
        emit_json(summary)
    elif "stored" in summary:
        click.echo(f"stored {summary['stored']} labelled samples ({summary['labels_total']} in all)")
    else:
        click.echo(f"{summary['item']}: labelled {summary['label']} (was {summary['was']})")


@click.command()
@click.option("--job", envvar="INKQ_REVIEW_JOB", show_envvar=True, help="Only this job's results.")
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="INKQ_REVIEW_EXPORT",
    show_envvar=True,
    help="Write the images and a labels.csv to correct, for `producer label --csv`.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=1000, show_default=True, envvar="INKQ_REVIEW_LIMIT", show_envvar=True
)
@click.pass_obj
def review(settings: Settings, job: str | None, export_dir: Path | None, limit: int) -> None:
    """List (JSON lines) or export the results marked for review: below INKQ_REVIEW_THRESHOLD."""
    client = Client(settings)
    rows = client.review(job, limit)
    if export_dir is None:
        for row in rows:
            click.echo(json.dumps(row, separators=(",", ":")))
        return
    sheet = client.export_review(rows, export_dir)
    with sheet.open(newline="") as f:
        exported = sum(1 for _ in csv.reader(f)) - 1  # rows with unusable stored data are skipped
    click.echo(f"exported {exported} images to {export_dir}; correct {sheet} and run: producer label --csv {sheet}")
