"""`producer demo` and `producer finetune-demo`: the whole system on this machine, for a first look."""

from __future__ import annotations

from collections.abc import Callable

import click

from config.cli import emit_json
from config.settings import Settings, env_var

__all__ = ["demo_command", "finetune_demo_command"]


def demo_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options both demos share: the fallback model's epochs and where MNIST is."""
    command = click.option(
        "--data-root", envvar=env_var("data_root"), show_envvar=True, type=click.Path(file_okay=False)
    )(command)
    return click.option(
        "--epochs",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        envvar="INKQ_DEMO_EPOCHS",
        show_envvar=True,
        help="Epochs of the short base model trained when the registry has none.",
    )(command)


@click.command("demo")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    envvar="INKQ_DEMO_COUNT",
    show_envvar=True,
    help="How many MNIST test digits to write and submit.",
)
@click.option(
    "--fields",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    envvar="INKQ_DEMO_FIELDS",
    show_envvar=True,
    help="Generated fields read after the digits (half comb-box ZIP codes, half free numbers).",
)
@demo_options
@click.option(
    "--keep",
    is_flag=True,
    envvar="INKQ_DEMO_KEEP",
    show_envvar=True,
    help="Keep the written scans (their folder is printed).",
)
@click.option("--json", "as_json", is_flag=True, envvar="INKQ_JSON", show_envvar=True)
@click.pass_obj
def demo_command(
    settings: Settings, count: int, fields: int, epochs: int, data_root: str | None, keep: bool, as_json: bool
) -> None:
    """Run the whole pipeline on this machine: Redis, model, worker, digits and fields."""
    from producer.demo import demo

    summary = demo(settings.replace(data_root=data_root), count=count, epochs=epochs, keep=keep, fields=fields)
    if as_json:
        emit_json(summary)
        return
    click.echo(
        f"{summary['items']} scans recognised by model {summary['model_version']}: "
        f"accuracy {summary['accuracy']:.2%}, {summary['errors']} errors, "
        f"{summary['images_per_second']:.0f} images/s end to end ({summary['seconds']:.2f}s from submit to the "
        f"last result; {summary['batches']} batches, largest {summary['largest_batch']})"
    )
    for kind, f in summary["fields"].items():
        click.echo(f"{f['fields']} {kind} fields: {f['exact']:.1%} read exactly, {f['review']} marked for review")


@click.command("finetune-demo")
@click.option(
    "--labels",
    type=click.IntRange(min=10),
    default=300,
    show_default=True,
    envvar="INKQ_DEMO_LABELS",
    show_envvar=True,
    help="Outlined training digits to label.",
)
@click.option(
    "--test",
    type=click.IntRange(min=10),
    default=1000,
    show_default=True,
    envvar="INKQ_DEMO_TEST",
    show_envvar=True,
    help="Outlined test digits to measure the style on.",
)
@demo_options
@click.pass_obj
def finetune_demo_command(settings: Settings, labels: int, test: int, epochs: int, data_root: str | None) -> None:
    """Teach a running system a new handwriting style: label, retrain, hot swap, measure."""
    from producer.demo import finetune_demo

    summary = finetune_demo(settings.replace(data_root=data_root), labels=labels, test=test, epochs=epochs)
    emit_json(summary)
