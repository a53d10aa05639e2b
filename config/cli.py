"""Conventions every inkq command line shares: settings, logging, errors, JSON output."""

from __future__ import annotations

import json
from typing import Any

import click

from config.errors import InkqError
from config.logs import configure
from config.settings import Settings, load_settings


class Group(click.Group):
    """A click group whose commands report inkq errors as one clear line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InkqError as exc:
            raise click.ClickException(str(exc)) from exc


def setup(ctx: click.Context) -> Settings:
    """Load the settings once per invocation (errors name the variable) and configure logging."""
    try:
        settings = load_settings()
    except InkqError as exc:
        raise click.ClickException(str(exc)) from exc
    configure(settings)
    ctx.obj = settings
    return settings


def emit_json(data: Any) -> None:
    """One JSON object on one line of stdout (the last line, for scripts to parse)."""
    click.echo(json.dumps(data, sort_keys=True, default=str))
