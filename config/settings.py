"""One typed settings object, read from ``INKQ_*`` environment variables and an optional TOML file.

Precedence, lowest first: the defaults (config/service.py, config/learning.py), the TOML file
named by ``INKQ_CONFIG`` (flat keys spelled like the fields), then environment variables
(``INKQ_`` + the field name in upper case). CLI options override individual fields with
``Settings.replace``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.errors import ConfigError
from config.learning import LearningSettings
from config.parsing import parse_setting
from config.service import ServiceSettings

ENV_PREFIX = "INKQ_"
CONFIG_FILE_VAR = "INKQ_CONFIG"


@dataclasses.dataclass(frozen=True)
class Settings(LearningSettings, ServiceSettings):
    """Every setting, in the order of the documentation table: the services' (config/service.py),
    then learning's (config/learning.py)."""

    def replace(self, **overrides: Any) -> Settings:
        """A copy with the non-None overrides applied (CLI options pass None when not given)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        merged = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | given
        return _validated(merged, source={k: f"--{k.replace('_', '-')}" for k in given})

    def path(self, name: str) -> Path:
        """A path-valued setting with ``~`` expanded."""
        return Path(str(getattr(self, name))).expanduser()


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from defaults, the optional TOML file and the environment."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    known = {f.name for f in dataclasses.fields(Settings)}
    config_file = env.get(CONFIG_FILE_VAR)
    if config_file:
        path = Path(config_file).expanduser()
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{CONFIG_FILE_VAR}={config_file}: cannot read TOML settings file: {exc}") from exc
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values.update(data)
        source.update({k: f"{path}: {k}" for k in data})
    for name in known:
        var = env_var(name)
        if var in env:
            values[name] = env[var]
            source[name] = var
    return _validated(values, source)


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the documentation table."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        shown = (
            ",".join(map(str, default))
            if isinstance(default, tuple)
            else str(default).lower()
            if isinstance(default, bool)
            else str(default)
        )
        rows.append((env_var(f.name), shown, f.metadata["doc"]))
    return rows


def _validated(values: Mapping[str, Any], source: Mapping[str, str]) -> Settings:
    parsed: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name not in values:
            continue
        where = source.get(f.name, f.name)
        parsed[f.name] = parse_setting(f, values[f.name], where)
    return Settings(**parsed)
