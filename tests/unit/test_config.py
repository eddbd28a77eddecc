"""Loading `moby serve`'s settings: every mistake is one line naming what the user wrote."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from moby.config import (
    Settings,
    check_data_dir,
    check_state_path,
    env_names,
    load_settings,
    settings_reference,
    unknown_variables,
    variables,
)
from moby.configerror import ConfigError, describe_allowed, field_schemas


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.upper().startswith("MOBY_"):
            monkeypatch.delenv(key)
    yield


def problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[str, ...]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return info.value.problems


def test_defaults_load() -> None:
    loaded = load_settings()
    assert loaded.settings.batch_max_points == 5000 and loaded.warnings == ()


def test_a_bad_variable_is_named_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems(monkeypatch, MOBY_BATCH_MAX_POINTS="abc") == (
        "MOBY_BATCH_MAX_POINTS='abc': should be a valid integer, unable to parse string as an integer; "
        "allowed: an integer ≥ 1 (default 5000)",
    )
    # pydantic-settings reads variables whatever their case: the line uses the user's spelling
    monkeypatch.delenv("MOBY_BATCH_MAX_POINTS")
    (line,) = problems(monkeypatch, moby_queue_sync="fast")
    assert line.startswith("moby_queue_sync='fast': not one of the choices; allowed: one of full, normal")


def test_every_problem_has_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = problems(
        monkeypatch,
        MOBY_WRITE_CONCURRENCY="99",
        MOBY_LOG_LEVEL="chatty",
        MOBY_MQTT_URL="http://user:s3cret@broker:1883",
        MOBY_MQTT_CA_FILE="/nonexistent/ca.crt",
    )
    assert len(lines) == 4
    text = "\n".join(lines)
    assert "s3cret" not in text
    assert (
        "MOBY_MQTT_URL='http://user:***@broker:1883': must be mqtt://host:port or mqtts://host:port" in text
    )
    assert (
        "MOBY_LOG_LEVEL='chatty': not one of the choices; allowed: one of debug, info, warning, error" in text
    )
    assert "MOBY_MQTT_CA_FILE='/nonexistent/ca.crt'" in text and "the path of an existing file" in text


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBY_LOG_LEVEL", "DEBUG")
    assert load_settings().settings.log_level == "debug"


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBY_BATCH_MAX_POINTS", "")
    assert load_settings().settings.batch_max_points == 5000


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_every_field_is_reported_under_its_variable(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    """Fields added to Settings later get the same treatment: nothing here lists them by hand."""
    var = env_names(field)[0]
    assert var.startswith("MOBY_") and var in variables()
    refused = 0
    for bad in ("not-a-valid-value", "/nonexistent/file", "has spaces / and \n a newline"):
        monkeypatch.setenv(var, bad)
        try:
            load_settings()
        except ConfigError as exc:
            (line,) = exc.problems
            assert line.startswith(f"{var}=") and "\n" not in line
            refused += 1
    # free text (a host name, a password) takes anything; every other kind refused one of them
    assert refused or describe_allowed(field_schemas(Settings)[field]) in ("text", "text (secret)", "a path")


def test_unknown_variables_are_warned_about_with_the_closest_name() -> None:
    warnings = unknown_variables(
        {
            "MOBY_BATCH_MAX_POINT": "5",
            "MOBY_DATA_DIR": "x",
            "MOBY_CONFIG": "f",
            "PATH": "/bin",
            "MOBY_ZZZ": "1",
        }
    )
    assert warnings == [
        "MOBY_BATCH_MAX_POINT is not a MOBY setting and is ignored (did you mean MOBY_BATCH_MAX_POINTS?)",
        "MOBY_ZZZ is not a MOBY setting and is ignored",
    ]


def test_a_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert problems(monkeypatch, MOBY_CONFIG=str(missing)) == (f"MOBY_CONFIG='{missing}': no such file",)
    assert problems(monkeypatch, MOBY_CONFIG=str(tmp_path)) == (
        f"MOBY_CONFIG='{tmp_path}': is a folder, not a TOML file",
    )


def test_a_config_file_that_is_not_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "moby.toml"
    path.write_text("batch_max_points = \n")
    (line,) = problems(monkeypatch, MOBY_CONFIG=str(path))
    assert line.startswith(f"{path}: not valid TOML: ") and "line 1" in line


def test_config_file_keys_are_named_with_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "moby.toml"
    path.write_text('batch_max_points = "abc"\nbatch_max_point = 3\nMOBY_DATA_DIR = "x"\n[mqtt]\nurl = "y"\n')
    monkeypatch.setenv("MOBY_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.problems == (
        f"{path}: batch_max_points='abc': should be a valid integer, unable to parse string as an integer; "
        "allowed: an integer ≥ 1 (default 5000)",
    )
    assert info.value.warnings == (
        f"{path}: unknown key batch_max_point is ignored (did you mean batch_max_points?)",
        f"{path}: unknown key MOBY_DATA_DIR is ignored (did you mean data_dir?)",
        f"{path}: unknown table [mqtt] is ignored (did you mean mqtt_url?)",
    )


def test_the_environment_wins_over_the_file_and_is_the_one_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "moby.toml"
    path.write_text("batch_max_points = 7\nwrite_concurrency = 2\n")
    monkeypatch.setenv("MOBY_CONFIG", str(path))
    loaded = load_settings()
    assert loaded.settings.batch_max_points == 7 and loaded.warnings == ()
    (line,) = problems(monkeypatch, MOBY_BATCH_MAX_POINTS="0")
    assert line.startswith("MOBY_BATCH_MAX_POINTS='0': should be greater than or equal to 1")


def test_a_data_dir_that_is_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    for value, problem in [
        (tmp_path / "f", "exists and is not a folder"),
        (tmp_path / "f" / "sub", "cannot create it (Not a directory)"),
    ]:
        monkeypatch.setenv("MOBY_DATA_DIR", str(value))
        with pytest.raises(ConfigError) as info:
            check_data_dir(load_settings())
        assert info.value.problems == (f"MOBY_DATA_DIR='{value}': {problem}",)


def test_a_queue_database_sqlite_cannot_open(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOBY_DATA_DIR", str(tmp_path))
    (tmp_path / "queue.sqlite").write_bytes(b"this is not a database, it is a text file of some length" * 20)
    with pytest.raises(ConfigError) as info:
        check_data_dir(load_settings())
    database = tmp_path / "queue.sqlite"
    assert info.value.problems == (
        f"MOBY_DATA_DIR='{tmp_path}': {database}: SQLite cannot open it (file is not a database)",
    )
    (tmp_path / "queue.sqlite").unlink()
    (tmp_path / "queue.sqlite").mkdir()
    with pytest.raises(ConfigError) as info:
        check_data_dir(load_settings())
    assert info.value.problems[0].endswith("queue.sqlite: is a folder, not a database file")


def test_a_usable_data_dir_is_created(tmp_path: Path) -> None:
    check_state_path(
        "MOBY_DATA_DIR", tmp_path / "new" / "dir", database=tmp_path / "new" / "dir" / "q.sqlite"
    )
    assert (tmp_path / "new" / "dir" / "q.sqlite").exists()


def test_the_reference_lists_every_setting_once_in_its_section() -> None:
    groups = settings_reference()
    names = [v.name for _, variables in groups for v in variables]
    assert sorted(names) == sorted(env_names(f)[0] for f in Settings.model_fields)
    titles = [title for title, _ in groups]
    assert titles[:3] == ["the contract", "MQTT", "durable queue"]
    by_name = {v.name: v for _, variables in groups for v in variables}
    assert by_name["MOBY_DATA_DIR"].default == "./var"
    assert by_name["MOBY_WRITE_CONCURRENCY"].allowed == "an integer ≥ 1 and ≤ 16"
    assert by_name["MOBY_INFLUX_PASSWORD"].default == "—"
