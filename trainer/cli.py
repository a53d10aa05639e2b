"""`trainer`: build the base model from MNIST, evaluate versions, list the registry."""

from __future__ import annotations

import sys

import click

from config.cli import Group, emit_json, setup
from config.settings import Settings, env_var
from storage.labels import Labels
from storage.registry import Registry
from trainer.registry_cli import prune, registry_for, rollback, versions


def _labels(registry: Registry) -> Labels:
    return Labels(registry.redis, registry.keys)


@click.group(cls=Group)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Train, evaluate and list inkq model versions (settings: INKQ_* variables, INKQ_CONFIG file)."""
    setup(ctx)


@cli.command()
@click.option(
    "--data-root",
    envvar=env_var("data_root"),
    show_envvar=True,
    type=click.Path(file_okay=False),
    help="MNIST in torchvision's layout (downloaded there when missing and online).",
)
@click.option("--epochs", envvar=env_var("epochs"), show_envvar=True, type=int)
@click.option("--weights", envvar=env_var("weights"), show_envvar=True, help="none, imagenet or a weights file.")
@click.option("--batch-size", envvar=env_var("batch_size"), show_envvar=True, type=int)
@click.option("--learning-rate", envvar=env_var("learning_rate"), show_envvar=True, type=float)
@click.option("--seed", envvar=env_var("seed"), show_envvar=True, type=int)
@click.option("--val-size", envvar=env_var("val_size"), show_envvar=True, type=int)
@click.option(
    "--limit",
    envvar="INKQ_TRAIN_LIMIT",
    show_envvar=True,
    type=click.IntRange(min=2),
    help="Use only the first N training images (smoke runs).",
)
@click.option(
    "--test-limit",
    envvar="INKQ_TEST_LIMIT",
    show_envvar=True,
    type=click.IntRange(min=1),
    help="Score only the first N test images (smoke runs).",
)
@click.option(
    "--progress/--no-progress",
    envvar="INKQ_PROGRESS",
    show_envvar=True,
    default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="INKQ_JSON",
    show_envvar=True,
    help="Print the summary as one JSON object on the last line.",
)
@click.option(
    "--make-current",
    is_flag=True,
    help="Make the new model current even if it scores worse than the current one.",
)
@click.pass_obj
def train(
    settings: Settings,
    /,
    limit: int | None,
    test_limit: int | None,
    progress: bool | None,
    as_json: bool,
    make_current: bool,
    **options: object,
) -> None:
    """Train the base model from MNIST and publish it; it becomes current when there is no
    current model, when it is no worse on the MNIST test images than the current one (within
    INKQ_BASE_TOLERANCE), or with --make-current. Otherwise it is kept as rejected."""
    from trainer.base import train_base

    settings = settings.replace(**options)
    registry = registry_for(settings)  # fail before training, not after, when Redis is down
    show = sys.stderr.isatty() if progress is None else progress
    summary = train_base(
        settings, registry, limit=limit, test_limit=test_limit, progress=show, make_current=make_current
    )
    if "rank" in summary:  # a torchrun worker rank: rank 0 reports for everyone
        return
    if as_json:
        emit_json(summary)
        return
    click.echo(
        f"published {summary['version']}: test accuracy {summary['test_accuracy']:.4%} "
        f"(val {summary['val_accuracy']:.4%}, {summary['train_seconds']:.0f}s training)"
    )
    if summary["promoted"]:
        click.echo(f"{summary['version']} is now the current model: {summary['reason']}")
    else:
        click.echo(
            f"{summary['version']} rejected, current model stays {summary['current']}: {summary['reason']} "
            "(`trainer train --make-current` to replace it anyway)"
        )


@cli.command()
@click.option("--data-root", envvar=env_var("data_root"), show_envvar=True, type=click.Path(file_okay=False))
@click.option(
    "--split",
    envvar="INKQ_SPLIT",
    show_envvar=True,
    type=click.Choice(["test", "train"]),
    default="test",
    show_default=True,
)
@click.option(
    "--version", "version", envvar="INKQ_VERSION", show_envvar=True, help="Version to score (default: the current one)."
)
@click.option(
    "--limit",
    envvar="INKQ_EVAL_LIMIT",
    show_envvar=True,
    type=click.IntRange(min=1),
    help="Score only the first N images.",
)
@click.option(
    "--compile/--no-compile",
    envvar=env_var("compile"),
    show_envvar=True,
    default=None,
    help="Score with the compiled serving engine (default from INKQ_COMPILE).",
)
@click.option("--json", "as_json", is_flag=True, envvar="INKQ_JSON", show_envvar=True)
@click.pass_obj
def evaluate(
    settings: Settings,
    data_root: str | None,
    split: str,
    version: str | None,
    limit: int | None,
    compile: bool | None,
    as_json: bool,
) -> None:
    """Score a version with the serving engine on an MNIST split."""
    from trainer.base import evaluate_version

    settings = settings.replace(data_root=data_root, compile=compile)
    result = evaluate_version(settings, registry_for(settings), version=version, split=split, limit=limit)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"{result['version']}: accuracy {result['accuracy']:.4%} on {result['n']} {split} images "
            f"({result['engine']})"
        )


@cli.command()
@click.option(
    "--data-root",
    envvar=env_var("data_root"),
    show_envvar=True,
    type=click.Path(file_okay=False),
    help="MNIST, for the replay sample and the base held-out set.",
)
@click.option("--epochs", envvar=env_var("retrain_epochs"), show_envvar=True, type=int)
@click.option("--progress/--no-progress", envvar="INKQ_PROGRESS", show_envvar=True, default=None)
@click.option("--json", "as_json", is_flag=True, envvar="INKQ_JSON", show_envvar=True)
@click.pass_obj
def retrain(
    settings: Settings, data_root: str | None, epochs: int | None, progress: bool | None, as_json: bool
) -> None:
    """Fine-tune the current model on new labels; promote the candidate only if it is better."""
    from trainer import retrain as retraining

    settings = settings.replace(data_root=data_root, retrain_epochs=epochs)
    registry = registry_for(settings)
    show = sys.stderr.isatty() if progress is None else progress
    summary = retraining.retrain(settings, registry, _labels(registry), progress=show)
    if "rank" in summary:  # a torchrun worker rank: rank 0 reports for everyone
        return
    if as_json:
        emit_json(summary)
    elif summary["version"] is None:
        click.echo(f"nothing to do: {summary['reason']}")
    else:
        verdict = "promoted" if summary["promoted"] else "rejected"
        click.echo(f"{summary['version']} {verdict}: {summary['reason']}")


@cli.command()
@click.option("--data-root", envvar=env_var("data_root"), show_envvar=True, type=click.Path(file_okay=False))
@click.option("--min-labels", envvar=env_var("watch_min_labels"), show_envvar=True, type=int)
@click.option(
    "--interval",
    "interval_s",
    envvar=env_var("watch_interval_s"),
    show_envvar=True,
    type=int,
    help="Seconds after the last run to retrain when any label arrived.",
)
@click.option(
    "--poll",
    "poll_s",
    envvar="INKQ_WATCH_POLL_S",
    show_envvar=True,
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between checks.",
)
@click.option(
    "--once",
    is_flag=True,
    envvar="INKQ_WATCH_ONCE",
    show_envvar=True,
    help="Check once, retrain if due, and exit (for cron).",
)
@click.pass_obj
def watch(
    settings: Settings, data_root: str | None, min_labels: int | None, interval_s: int | None, poll_s: float, once: bool
) -> None:
    """Run as a service: retrain when enough labels arrived, or periodically when any have. With
    INKQ_METRICS_PORT, serves /metrics (behind INKQ_METRICS_TOKEN) and /healthz there."""
    from config import metrics_http
    from trainer import watch as watching
    from trainer.metrics import TrainerMetrics

    settings = settings.replace(data_root=data_root, watch_min_labels=min_labels, watch_interval_s=interval_s)
    metrics_http.check(settings)  # a port without a token fails here, before anything else
    registry = registry_for(settings)
    metrics = TrainerMetrics()
    server = metrics_http.serve(settings, metrics.registry, lambda: metrics.health(poll_s))
    try:
        outcomes = watching.watch(settings, registry, _labels(registry), once=once, poll_s=poll_s, metrics=metrics)
    finally:
        if server is not None:
            server.close()
    for outcome in outcomes:
        emit_json(outcome)


for command in (versions, rollback, prune):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="trainer")


if __name__ == "__main__":
    main()
