"""`producer submit --field`: read each image as a field of digits, optionally under a rule."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from config.errors import ConfigError
from recognizer.rules import CHECKS, FieldRule

__all__ = ["check_reading", "field_options", "reading"]


def reading(field: bool, length: str | None, pattern: str | None, check: str | None) -> dict[str, Any] | None:
    """The job's ``read`` meta from the options; None for today's single characters."""
    if not field:
        if length or pattern or check:
            raise click.UsageError("--length, --pattern and --check describe fields: add --field")
        return None
    spec: dict[str, Any] = {}
    if length:
        lo, _, hi = length.partition("-")
        try:
            spec["length"] = [int(lo), int(hi or lo)]
        except ValueError as exc:
            raise click.BadParameter(f"{length!r}: give N or MIN-MAX, e.g. 5 or 3-8", param_hint="--length") from exc
    if pattern:
        spec["pattern"] = pattern
    if check:
        spec["check"] = check
    try:
        rule = FieldRule.parse(spec)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    return {"kind": "field", "rule": rule.as_dict() if rule else None}


def check_reading(read: dict[str, Any]) -> None:
    """Refuse a ``read`` spec the workers could not follow, before anything is stored."""
    if read.get("kind") != "field" or set(read) - {"kind", "rule"}:
        raise ConfigError(f'a reading is {{"kind": "field", "rule": {{...}}}}, not {read!r}')
    FieldRule.parse(read.get("rule"))


def field_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --field, --length, --pattern and --check, handed to the command as one ``read``."""

    @functools.wraps(command)
    def wrapper(*args: Any, field: bool, length: str | None, pattern: str | None, check: str | None, **kw: Any) -> Any:
        return command(*args, read=reading(field, length, pattern, check), **kw)

    options = [
        click.option(
            "--field",
            is_flag=True,
            help="Each image is one field of digits (a ZIP code, an amount, an ID): read it whole, "
            "free or in a printed comb or box.",
        ),
        click.option("--length", metavar="N|MIN-MAX", help="With --field: how many characters a field has."),
        click.option(
            "--pattern", metavar="REGEX", help="With --field: a regular expression the whole reading must match."
        ),
        click.option("--check", type=click.Choice(sorted(CHECKS)), help="With --field: a check digit to satisfy."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
