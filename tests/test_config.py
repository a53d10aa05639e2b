"""Settings: defaults, environment, TOML file, validation messages that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, Settings, describe, load_settings


def test_defaults() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.buckets == (1, 8, 32, 128)


def test_environment_overrides_defaults() -> None:
    s = load_settings(
        {
            "INKQ_REDIS_URL": "rediss://:pw@example:6380/2",
            "INKQ_EPOCHS": "3",
            "INKQ_COMPILE": "false",
            "INKQ_BUCKETS": "64, 1,16",
            "INKQ_LEARNING_RATE": "0.5",
        }
    )
    assert s.redis_url == "rediss://:pw@example:6380/2"
    assert (s.epochs, s.compile, s.buckets, s.learning_rate) == (3, False, (1, 16, 64), 0.5)


def test_toml_file_then_environment(tmp_path: Path) -> None:
    f = tmp_path / "inkq.toml"
    f.write_text('epochs = 5\nprecision = "fp32"\nbuckets = [4, 2]\n')
    s = load_settings({"INKQ_CONFIG": str(f), "INKQ_EPOCHS": "7"})
    assert (s.epochs, s.precision, s.buckets) == (7, "fp32", (2, 4))


def test_every_precision_choice_is_accepted() -> None:
    for precision in ("auto", "fp32", "bf16", "int8"):
        assert load_settings({"INKQ_PRECISION": precision}).precision == precision


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INKQ_PRECISION": "fp8"}, "INKQ_PRECISION='fp8' is invalid: expected one of auto, fp32, bf16, int8"),
        ({"INKQ_EPOCHS": "many"}, "INKQ_EPOCHS='many' is invalid: expected an integer"),
        ({"INKQ_EPOCHS": "0"}, "INKQ_EPOCHS='0' is invalid: expected a value >= 1"),
        ({"INKQ_COMPILE": "maybe"}, "INKQ_COMPILE='maybe' is invalid: expected one of true, false"),
        ({"INKQ_BUCKETS": "8,x"}, "INKQ_BUCKETS='8,x' is invalid: expected a comma-separated list of integers"),
        ({"INKQ_DEVICE": "tpu"}, "INKQ_DEVICE='tpu' is invalid: expected one of auto, cpu, cuda"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert message in str(info.value)


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "inkq.toml"
    f.write_text("epoch = 5\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({"INKQ_CONFIG": str(f)})


def test_replace_validates_cli_overrides() -> None:
    s = Settings().replace(epochs=2, weights=None)
    assert s.epochs == 2 and s.weights == "none"
    with pytest.raises(ConfigError, match="--epochs"):
        Settings().replace(epochs=-1)


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for variable, _default, doc in describe():
        assert doc
        assert variable in readme, f"{variable} missing from README's settings table"
