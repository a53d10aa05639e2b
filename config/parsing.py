"""Parsing one setting's raw value (an environment string, a TOML value, a CLI option) into its
declared type, with the error that names where the bad value came from and what would do."""

from __future__ import annotations

import dataclasses
from typing import Any

from config.errors import ConfigError

__all__ = ["parse_setting", "setting"]


def setting(
    default: Any, doc: str, *, choices: tuple[str, ...] = (), minimum: float | None = None, secret: bool = False
) -> Any:
    """A settings field: its default, the documentation the README's table shows, and what
    ``parse_setting`` accepts for it."""
    # A secret stays out of the settings' repr, so logging the settings cannot leak it.
    return dataclasses.field(
        default=default, repr=not secret, metadata={"doc": doc, "choices": choices, "minimum": minimum}
    )


def parse_setting(f: dataclasses.Field[Any], raw: Any, where: str) -> Any:
    """The value of setting ``f`` given as ``raw`` by ``where`` (an env var, a file key, an option)."""
    kind: Any = type(f.default)
    choices: tuple[str, ...] = f.metadata["choices"]
    minimum = f.metadata["minimum"]

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}={raw!r} is invalid: expected {expected}")

    value: Any
    if kind is bool:
        if isinstance(raw, bool):
            value = raw
        elif str(raw).strip().lower() in ("1", "true", "yes", "on"):
            value = True
        elif str(raw).strip().lower() in ("0", "false", "no", "off"):
            value = False
        else:
            raise bad("one of true, false, 1, 0, yes, no, on, off")
    elif kind is tuple:
        items = raw if isinstance(raw, (list, tuple)) else [p for p in str(raw).split(",") if p.strip()]
        try:
            value = tuple(sorted({int(p) for p in items}))
        except (TypeError, ValueError):
            raise bad("a comma-separated list of integers, e.g. 1,8,32,128") from None
        if not value:
            raise bad("at least one integer")
        if minimum is not None and min(value) < minimum:
            raise bad(f"integers >= {minimum}")
        return value
    elif kind in (int, float):
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = kind(raw)
        except (TypeError, ValueError):
            raise bad("an integer" if kind is int else "a number") from None
    else:
        value = str(raw)
    if choices and value not in choices:
        raise bad(f"one of {', '.join(choices)}")
    if minimum is not None and value < minimum:
        raise bad(f"a value >= {minimum}")
    return value
