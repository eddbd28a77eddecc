"""The real `moby` command, as a user runs it: configuration mistakes and what it prints where.

Each mistake gives one line on stderr naming what the user wrote, exit code 2 and no traceback
(unless MOBY_LOG_LEVEL=debug); results go to stdout, whole, even when it is not a terminal.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from moby.procs import free_port

pytestmark = pytest.mark.integration

MOBY = Path(sys.executable).parent / "moby"
ROOT = Path(__file__).resolve().parents[2]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("MOBY_")}
    return subprocess.run(
        [str(MOBY), *args],
        env={**clean, "COLUMNS": "80", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def one_error(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a configuration mistake prints (after any warnings), checking exit 2."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: ")
    return errors[0].removeprefix("error: ")


@pytest.fixture
def agent_toml(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        'factory_id = "f1"\nbrokers = ["mqtt://127.0.0.1:1"]\n'
        f'buffer_path = "{tmp_path}/edge.sqlite"\n'
        '[[sensors]]\nsensor_id = "s1"\ntype = "noise"\ninterval_s = 0\n'
    )
    return path


# -- one line, exit 2, for every command that reads the settings ------------------------------------
@pytest.mark.parametrize(
    "command",
    [["serve"], ["proxy"], ["simulate", "--duration", "1"], ["up"], ["rollup", "backfill"]],
    ids=lambda c: c[0],
)
def test_a_bad_variable_is_one_line_and_exit_2(command: list[str]) -> None:
    line = one_error(run(*command, env={"MOBY_BATCH_MAX_POINTS": "abc"}))
    assert line == (
        "MOBY_BATCH_MAX_POINTS='abc': should be a valid integer, unable to parse string as an integer; "
        "allowed: an integer ≥ 1 (default 5000)"
    )


def test_the_traceback_only_at_debug_level() -> None:
    done = run("serve", env={"MOBY_BATCH_MAX_POINTS": "abc", "MOBY_LOG_LEVEL": "debug"})
    assert done.returncode == 2
    assert "Traceback" in done.stderr and "error: MOBY_BATCH_MAX_POINTS='abc'" in done.stderr


def test_the_old_up_options_name_their_variable() -> None:
    """`moby up` read MOBY_API_PORT through an option: the line named --api-port, not the variable."""
    assert one_error(run("up", env={"MOBY_API_PORT": "http"})).startswith("MOBY_API_PORT='http': ")


def test_a_misspelled_variable_is_warned_about_with_the_right_name(tmp_path: Path) -> None:
    done = run("schema", "export", str(tmp_path), env={"MOBY_BATCH_MAX_POINT": "5"})
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: MOBY_BATCH_MAX_POINT is not a MOBY setting and is ignored "
        "(did you mean MOBY_BATCH_MAX_POINTS?)"
    ]


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    line = one_error(run("proxy", env={"MOBY_CONFIG": str(tmp_path / "moby.toml")}))
    assert line == f"MOBY_CONFIG='{tmp_path}/moby.toml': no such file"


def test_config_file_keys_are_named_in_their_file(tmp_path: Path) -> None:
    config = tmp_path / "moby.toml"
    config.write_text('write_concurrency = 0\nqueue_synk = "full"\n')
    done = run("serve", env={"MOBY_CONFIG": str(config)})
    assert one_error(done) == (
        f"{config}: write_concurrency=0: should be greater than or equal to 1; "
        "allowed: an integer ≥ 1 and ≤ 16 (default 4)"
    )
    assert f"warning: {config}: unknown key queue_synk is ignored (did you mean queue_sync?)" in done.stderr


def test_a_data_dir_that_sqlite_cannot_use(tmp_path: Path) -> None:
    (tmp_path / "queue.sqlite").write_bytes(b"not a database " * 100)
    line = one_error(run("serve", env={"MOBY_DATA_DIR": str(tmp_path)}))
    database = tmp_path / "queue.sqlite"
    assert line == f"MOBY_DATA_DIR='{tmp_path}': {database}: SQLite cannot open it (file is not a database)"


def test_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    for command in (["serve"], ["simulate"], ["up"], ["broker", "add-user", "u1", "--role", "operator"]):
        line = one_error(run(*command, env={"MOBY_DATA_DIR": str(tmp_path / "state")}))
        assert line.startswith(f"MOBY_DATA_DIR='{tmp_path}/state': "), line
        assert line.endswith("exists and is not a folder") or "Not a directory" in line, line


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    """A folder this test's `moby` cannot write in: it runs as `nobody` when the tests run as root."""
    path = Path(tempfile.mkdtemp(prefix="moby-ro-", dir="/tmp"))
    path.chmod(0o555)
    yield path
    path.chmod(0o755)
    shutil.rmtree(path)


def test_an_unwritable_data_dir_names_the_path(read_only_dir: Path) -> None:
    env = {"MOBY_DATA_DIR": str(read_only_dir)}
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root, and no setpriv to drop privileges")
        clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("MOBY_")}
        done = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", str(MOBY), "serve"],
            env={**clean, **env, "HOME": "/tmp"},
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/tmp",
        )
    else:
        done = run("serve", env=env)
    assert one_error(done) == f"MOBY_DATA_DIR='{read_only_dir}': cannot write in it (Permission denied)"


def test_edge_agent_toml_mistakes_name_the_key(agent_toml: Path) -> None:
    line = one_error(run("edge", "--config", str(agent_toml)))
    assert line == (
        f"{agent_toml}: [sensors.0] interval_s=0: should be greater than 0; "
        "allowed: a number > 0 (default 1.0)"
    )
    agent_toml.write_text(agent_toml.read_text().replace("interval_s = 0", "intervl_s = 1"))
    line = one_error(run("edge", "--config", str(agent_toml)))
    assert line == f"{agent_toml}: [sensors.0] intervl_s: not a known setting (did you mean interval_s?)"
    agent_toml.write_text("factory_id = \n")
    assert one_error(run("edge", "-c", str(agent_toml))).startswith(f"{agent_toml}: not valid TOML: ")
    assert one_error(run("edge", "-c", str(agent_toml) + ".missing")) == (
        f"--config '{agent_toml}.missing': no such file"
    )


def test_edge_buffer_path_that_cannot_be_used(agent_toml: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    agent_toml.write_text(
        agent_toml.read_text()
        .replace("interval_s = 0", "interval_s = 1")
        .replace(f"{tmp_path}/edge.sqlite", f"{tmp_path}/file/edge.sqlite")
    )
    line = one_error(run("edge", "--config", str(agent_toml)))
    buffer = tmp_path / "file" / "edge.sqlite"
    assert line == f"{agent_toml}: buffer_path='{buffer}': {buffer.parent}: exists and is not a folder"


def test_rollup_backfill_names_a_bad_url() -> None:
    line = one_error(run("rollup", "backfill", env={"MOBY_INFLUX_URL": "influx:8086"}))
    assert line == (
        "MOBY_INFLUX_URL='influx:8086': must be http://host:port or https://host:port "
        "(default http://127.0.0.1:8086)"
    )


# -- what is printed where ----------------------------------------------------------------------------
def test_results_go_to_stdout_whole_when_piped(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "schemas"
    done = run("schema", "export", str(deep))
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines() == [
        f"wrote {deep}/{name}.schema.json"
        for name in ("moby.telemetry.v1", "moby.health.v1", "moby.status.v1")
    ]
    assert all(len(line) > 80 for line in done.stdout.splitlines())

    done = run("grafana", "export", str(deep / "grafana"), "--alert-email", "ops@example.com")
    assert done.returncode == 0 and done.stderr == ""
    *written, notified = done.stdout.splitlines()
    assert all(line.startswith(f"wrote {deep}/grafana/") for line in written)
    assert notified == "alerts notify the contact point MOBY: e-mail to 1 address"
    # without a contact point the rules notify no one: said on stderr, as a warning
    done = run("grafana", "export", str(deep / "grafana"))
    assert done.returncode == 0 and done.stderr.startswith("warning: no alert contact configured")


def test_broker_success_on_stdout_and_problems_on_stderr(tmp_path: Path) -> None:
    bdir = tmp_path / ("broker-folder-with-a-long-name-" * 3)
    done = run("broker", "init", "--dir", str(bdir))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert f"broker set up in {bdir}" in done.stdout and f"mosquitto -c {bdir}/mosquitto.conf" in done.stdout
    done = run("broker", "add-user", "ops", "--role", "operator", "--dir", str(bdir), "--no-reload")
    assert done.returncode == 0 and done.stderr == ""
    assert f"user ops (operator): password in {bdir}/users/ops.password" in done.stdout
    done = run("broker", "add-user", "ops", "--role", "operator", "--dir", str(bdir), "--no-reload")
    assert done.returncode == 1 and done.stdout == "" and "ops" in done.stderr


def test_add_user_does_not_offer_the_sensor_role(tmp_path: Path) -> None:
    helped = run("broker", "add-user", "--help", env={"COLUMNS": "200"})
    assert "backend" in helped.stdout and "gateway" in helped.stdout and "sensor]" not in helped.stdout
    assert "|sensor" not in helped.stdout and "sensor|" not in helped.stdout
    done = run("broker", "add-user", "dev1", "--role", "sensor", "--dir", str(tmp_path))
    assert done.returncode == 2 and "'sensor' is not one of" in done.stderr
    assert not (tmp_path / "users" / "dev1.password").exists()


def test_serve_help_lists_every_variable_with_its_default() -> None:
    from moby.config import Settings, env_names, settings_reference

    done = run("serve", "--help")
    assert done.returncode == 0
    text = done.stdout
    for title, variables in settings_reference():
        assert f" {title}\n" in text
        for v in variables:
            row = next(line for line in text.splitlines() if line.strip().startswith(v.name + " "))
            assert v.default in row and v.allowed in row, row
    assert all(env_names(f)[0] in text for f in Settings.model_fields)
    assert "MOBY_BATCH_MAX_POINTS" in text and "MOBY_CONFIG" in text


@pytest.mark.skipif(shutil.which("mosquitto") is None or shutil.which("influxd") is None, reason="no servers")
def test_up_prints_progress_on_stdout_and_hints_with_the_command_as_run(tmp_path: Path) -> None:
    """Only `.venv/bin/moby` exists (not on PATH): the hints must say that, not `moby`."""
    relative = os.path.relpath(MOBY, ROOT)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != MOBY.parent)
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("MOBY_")}
    ports = [str(free_port()) for _ in range(4)]
    proc = subprocess.Popen(
        [relative, "up", "--data-dir", str(tmp_path / "var"), "--sensors", "2", "--mqtt-port", ports[0],
         "--mqtt-cert-port", ports[1], "--influx-port", ports[2], "--api-port", ports[3]],
        cwd=ROOT,
        env={**clean, "PATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:  # ends when it exits; the last hint comes once all four parts run
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops everything."):
                break
        assert lines and lines[-1].startswith("Ctrl-C"), "\n".join(lines) + proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGINT)
        rest, errors = proc.communicate(timeout=120)
    text = "\n".join(lines)
    assert f"{relative} broker add-sensor SENSOR_ID --factory demo --dir {tmp_path}/var/broker" in text
    assert f"then: {relative} edge --config {tmp_path}/var/broker/sensors/SENSOR_ID/agent.toml" in text
    assert f"{relative} grafana export {tmp_path}/var/grafana" in text
    assert not re.search(r"(^|\s)moby (broker|edge|grafana) ", text), text
    assert proc.returncode == 0, errors
    assert errors == "", errors
    assert "stopped" in rest
