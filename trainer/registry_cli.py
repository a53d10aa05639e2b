"""`trainer versions`, `rollback` and `prune`: the registry commands that need no torch."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from config.cli import emit_json
from config.settings import Settings, env_var
from storage.connection import connect
from storage.keys import Keys
from storage.redis_checks import check_store
from storage.registry import Registry

__all__ = ["prune", "rollback", "versions"]


def registry_for(settings: Settings) -> Registry:
    """The registry at the configured Redis, once that Redis is known not to evict inkq's keys."""
    client = connect(settings)
    check_store(client, settings, "trainer")
    return Registry(client, Keys(settings.key_prefix))


@click.command()
@click.option("--json", "as_json", is_flag=True, envvar="INKQ_JSON", show_envvar=True)
@click.pass_obj
def versions(settings: Settings, as_json: bool) -> None:
    """List the model versions in the registry, oldest first; * marks the current one."""
    registry = registry_for(settings)
    current = registry.current()
    infos = registry.versions()
    if as_json:
        emit_json({"current": current, "versions": [vars(i) for i in infos]})
        return
    if not infos:
        click.echo("no model versions yet: run `trainer train`")
        return
    for info in infos:
        created = datetime.fromtimestamp(info.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        test = info.metrics.get("test_accuracy")
        val = info.metrics.get("val_accuracy")
        click.echo(
            f"{'*' if info.version == current else ' '} {info.version:<6} {created}  {info.status:<9} "
            f"{'pruned ' if info.pruned else ''}"
            f"test {'-' if test is None else f'{test:.4%}'}  val {'-' if val is None else f'{val:.4%}'}  "
            f"parent {info.parent or '-'}"
        )


@click.command()
@click.argument("version", required=False)
@click.option(
    "--force",
    is_flag=True,
    help="Take the registry lock over from a running train or retrain; its publish then fails.",
)
@click.pass_obj
def rollback(settings: Settings, version: str | None, force: bool) -> None:
    """Point the current model back at VERSION (default: the current version's parent).

    The label watermarks go back to what VERSION had learned, so labels learned only by the
    discarded model are trained on again. Refused while a train or retrain holds the registry
    lock, unless --force.
    """
    registry = registry_for(settings)
    with registry.lock(settings.lock_ttl_s, "rollback", force=force) as lease:
        current = registry.info()
        target = version or current.parent
        if not target:
            raise click.ClickException(f"{current.version} has no parent to roll back to; name a version")
        info = registry.set_current(target, token=lease.token)
    click.echo(
        f"current model: {target} (was {current.version}); labels after #{info.labels_upto} will be learned again"
    )


@click.command()
@click.option("--keep", envvar=env_var("keep_versions"), show_envvar=True, type=click.IntRange(min=0))
@click.pass_obj
def prune(settings: Settings, keep: int | None) -> None:
    """Delete the weights of versions retention does not keep (metadata stays); runs after every
    publish too. Kept: the current version, its ancestors, and the newest N not rejected."""
    settings = settings.replace(keep_versions=keep)
    registry = registry_for(settings)
    with registry.lock(settings.lock_ttl_s, "prune") as lease:
        pruned = registry.prune(settings.keep_versions, token=lease.token)
    click.echo(f"pruned {len(pruned)} version(s): {', '.join(pruned)}" if pruned else "nothing to prune")
