"""Configuration mistakes become one line each: the name as written, the bad value, what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from moby.configerror import (
    ConfigError,
    closest,
    describe_allowed,
    problem_lines,
    redact_url,
    show_default,
    show_value,
    toml_key,
)


class Sensor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sensor_id: Annotated[str, Field(pattern=r"^[a-z]+$")]
    interval_s: Annotated[float, Field(gt=0)] = 1.0


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: Annotated[int, Field(ge=1, le=16)] = 4
    mode: Literal["full", "normal"] = "full"
    password: SecretStr | None = None
    url: str = "mqtt://127.0.0.1:1883"
    types: list[Annotated[str, Field(pattern=r"^[a-z]+$")]] = ["vibration"]
    sensors: list[Sensor] = []
    enabled: bool = True


def lines(data: dict[str, object], name_of: object = None) -> list[str]:
    with pytest.raises(ValidationError) as info:
        Example.model_validate(data)
    return problem_lines(info.value, Example, name_of or (lambda loc: "X_" + toml_key(loc)))  # type: ignore[arg-type]


def test_one_line_names_the_setting_the_value_and_what_is_allowed() -> None:
    assert lines({"count": "abc"}) == [
        "X_count='abc': should be a valid integer, unable to parse string as an integer; "
        "allowed: an integer ≥ 1 and ≤ 16 (default 4)"
    ]
    assert lines({"count": 99}) == [
        "X_count=99: should be less than or equal to 16; allowed: an integer ≥ 1 and ≤ 16 (default 4)"
    ]
    assert lines({"mode": "fast"}) == [
        "X_mode='fast': not one of the choices; allowed: one of full, normal (default full)"
    ]
    assert lines({"enabled": "maybe"})[0].endswith("allowed: true or false (default true)")


def test_one_line_per_problem() -> None:
    assert len(lines({"count": 0, "mode": "x", "enabled": "x"})) == 3


def test_secrets_are_never_shown() -> None:
    # A SecretStr accepts any string, so a wrong *type* is the way to make it fail.
    (line,) = lines({"password": 12345})
    assert "12345" not in line and "X_password='***'" in line


def test_passwords_in_urls_are_redacted() -> None:
    assert show_value("mqtt://backend:hunter2@host:8883") == "'mqtt://backend:***@host:8883'"
    assert redact_url("http://h:8086") == "http://h:8086"
    assert redact_url("mqtt://u:p@h:notaport") == "<unparsable URL>"


def test_long_values_are_cut() -> None:
    shown = show_value("x" * 500)
    assert len(shown) == 80 and shown.endswith("…")


def test_nested_locations_read_as_toml_keys() -> None:
    (line,) = lines({"sensors": [{"sensor_id": "ok"}, {"sensor_id": "ok", "interval_s": 0}]})
    assert line == "X_[sensors.1] interval_s=0: should be greater than 0; allowed: a number > 0 (default 1.0)"
    (line,) = lines({"types": ["ok", "Not OK"]})
    assert line == "X_types[1]='Not OK': wrong form; allowed: text matching ^[a-z]+$"


def test_unknown_keys_suggest_the_closest_valid_name() -> None:
    with pytest.raises(ValidationError) as info:
        Example.model_validate({"sensors": [{"sensor_id": "a", "intervl_s": 1}]})
    (line,) = problem_lines(info.value, Example, toml_key, known=["sensor_id", "interval_s"])
    assert line == "[sensors.0] intervl_s: not a known setting (did you mean interval_s?)"
    assert closest("MOBY_BATCH_MAX_POINT", ["MOBY_BATCH_MAX_POINTS", "MOBY_DATA_DIR"]) == (
        "MOBY_BATCH_MAX_POINTS"
    )
    assert closest("COMPLETELY_ELSE", ["MOBY_DATA_DIR"]) is None


def test_missing_required_settings_are_named() -> None:
    with pytest.raises(ValidationError) as info:
        Sensor.model_validate({})
    assert problem_lines(info.value, Sensor, toml_key) == [
        "sensor_id: required, but not set; allowed: text matching ^[a-z]+$"
    ]


@pytest.mark.parametrize(
    ("schema", "text"),
    [
        ({"type": "integer", "minimum": 1}, "an integer ≥ 1"),
        ({"type": "integer", "minimum": 1048576}, "an integer ≥ 1048576 (1 MiB)"),
        ({"type": "number", "exclusiveMinimum": 0, "maximum": 5}, "a number > 0 and ≤ 5"),
        ({"enum": ["a", "b"]}, "one of a, b"),
        ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, "an integer"),
        ({"type": "string", "format": "file-path"}, "the path of an existing file"),
        ({"type": "string", "pattern": "^x$", "maxLength": 3}, "text matching ^x$, at most 3 characters"),
        ({"type": "array", "items": {"type": "string"}, "minItems": 1}, "a list of text, at least 1 entry"),
        ({"type": "array", "items": {"$ref": "#/$defs/S"}}, "a list of tables"),
        ({}, "a value"),
    ],
)
def test_what_is_allowed_reads_from_the_schema(schema: dict[str, object], text: str) -> None:
    assert describe_allowed(schema) == text


def test_defaults_are_shown_as_one_would_write_them() -> None:
    assert show_default(True) == "true"
    assert show_default(Path("var")) == "./var"
    assert show_default(None) == "—"
    assert show_default(5.0) == "5.0"


def test_a_config_error_holds_its_lines() -> None:
    exc = ConfigError(["a", "b"], warnings=["w"])
    assert exc.problems == ("a", "b") and exc.warnings == ("w",) and str(exc) == "a\nb"
