"""Refusals from a real Mosquitto (password file + ACL): every client stays up, says why once, and
recovers by itself once the operator fixes the broker and reloads it (SIGHUP).

- ``moby serve`` with a wrong password (CONNACK 0x86/0x87), or a broker that refuses its
  subscription (SUBACK 0x87, Mosquitto's dynamic-security plugin): up, ``/readyz`` 503, the
  refusal logged once with its reason and a hint naming the URL's user (never the password);
  fixed → connected within its backoff ceiling, and what is published after that is stored.
- ``moby edge`` with a wrong password: its readings wait in the buffer; fixed → all arrive.
- ``moby edge`` whose telemetry the ACL refuses (PUBACK 0x87): the link stays up, the readings
  stay buffered, the refusal is counted in health and logged once; fixed → all arrive, none lost.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from moby.broker.acl import Principal, Role, Rule, all_rules, render_mosquitto
from moby.broker.auth import hash_password, password_file, split_hash
from moby.broker.mosquitto import Mosquitto
from moby.edge.buffer import EdgeBuffer, sensor_key
from moby.procs import ManagedProcess, free_port, http_ready
from moby.store.influxd import Influxd
from tests.support import Backend, http_json, influx_query, telemetry, wait_until

pytestmark = pytest.mark.integration

CEILING_S = 2  # the clients' reconnect backoff ceiling in these tests
FACTORY = "f1"
SENSORS = ("temp-1", "hum-1")


@dataclass
class AuthBroker:
    """A Mosquitto of this test's own that wants a password and applies an ACL."""

    broker: Mosquitto
    passwords: dict[str, str] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)

    def write(self) -> None:
        d = self.broker.directory
        (d / "passwords").write_text(
            password_file({u: hash_password(p, iterations=1000) for u, p in self.passwords.items()})
        )
        (d / "acl").write_text(render_mosquitto(self.rules))

    def reload(self) -> None:
        self.write()
        self.broker.signal(signal.SIGHUP)

    def url(self, user: str, password: str) -> str:
        return f"mqtt://{user}:{password}@127.0.0.1:{self.broker.port}"

    def publish(self, user: str, topic: str, payloads: list[bytes]) -> None:
        subprocess.run(
            ["mosquitto_pub", "-p", str(self.broker.port), "-u", user, "-P", self.passwords[user],
             "-q", "1", "-t", topic, "-l", "-V", "mqttv5"],
            input=b"\n".join(payloads) + b"\n", check=True, timeout=60,
        )  # fmt: skip


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[AuthBroker]:
    b = Mosquitto(tmp_path / "mosquitto", free_port())
    conf, d = b.directory / "mosquitto.conf", b.directory
    auth_lines = f"allow_anonymous false\npassword_file {d / 'passwords'}\nacl_file {d / 'acl'}"
    conf.write_text(conf.read_text().replace("allow_anonymous true", auth_lines))
    auth = AuthBroker(
        b,
        passwords={"backend": "backend-secret", "gw": "gw-secret"},
        rules=all_rules([Principal("backend", Role.BACKEND), Principal("gw", Role.GATEWAY, FACTORY)]),
    )
    auth.write()
    b.start()
    yield auth
    b.stop()


@pytest.fixture
def backends(tmp_path: Path, db_name: str) -> Iterator[list[Backend]]:
    started: list[Backend] = []
    yield started
    for backend in started:
        backend.stop()


def start_backend(started: list[Backend], tmp_path: Path, url: str, influxd: Influxd, db: str) -> Backend:
    """`moby serve`, waited for until it answers /healthz (it may well not be ready)."""
    backend = Backend(
        data_dir=tmp_path / f"backend{len(started)}",
        mqtt_url=url,
        influx_url=influxd.url,
        db=db,
        # the client id is the broker user, as `moby broker` requires (one identity, one session)
        client_id=urlsplit(url).username or f"moby-test-refusals-{len(started)}",
        extra_env={"MOBY_MQTT_RECONNECT_MAX_S": str(CEILING_S)},
    )
    backend._ready = lambda: http_ready(f"{backend.api}/healthz")  # type: ignore[method-assign]
    started.append(backend)
    backend.start()
    return backend


def log_of(process: ManagedProcess) -> str:
    return process.log_path.read_text(errors="replace")


def logged_at(log: str, event: str) -> datetime:
    """When the first line with ``event`` was logged (the console format starts with its UTC time)."""
    line = next(line for line in log.splitlines() if event in line)
    return datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00"))


def readiness(backend: Backend) -> tuple[int, dict[str, object]]:
    status, body = http_json(backend.api + "/readyz")
    return status, body


def test_backend_with_a_wrong_password_stays_up_says_why_once_and_recovers_after_the_fix(
    tmp_path, auth_broker, influxd, db_name, backends
) -> None:
    backend = start_backend(backends, tmp_path, auth_broker.url("backend", "old-secret"), influxd, db_name)
    refused = "the broker refused the connection"
    wait_until(lambda: refused in log_of(backend), 20, what="the refusal logged")
    time.sleep(3 * CEILING_S)  # several more attempts at the backoff ceiling: none logged again
    status, body = readiness(backend)
    assert status == 503 and body["mqtt"] is False
    log = log_of(backend)
    assert log.count(refused) == 1, log
    line = next(line for line in log.splitlines() if refused in line)
    assert "0x86" in line or "0x87" in line, line
    assert "'backend'" in line and "MOBY_MQTT_URL" in line  # the hint names the user and where it is set
    assert "old-secret" not in log and "backend-secret" not in log
    assert backend.metric("moby_mqtt_connect_failures_total", 'kind="connect_refused_') >= 3

    # The operator makes the broker's password file agree with the backend's URL and reloads it.
    auth_broker.passwords["backend"] = "old-secret"
    fixed_at = datetime.now(UTC)
    auth_broker.reload()
    wait_until(lambda: readiness(backend)[0] == 200, CEILING_S + 10, interval=0.1, what="ready after the fix")
    # connected within one backoff step (at most the ceiling), plus slack for a loaded machine
    assert logged_at(log_of(backend), "connected to the broker") - fixed_at < timedelta(seconds=CEILING_S + 3)

    now = int(time.time() * 1000)
    auth_broker.publish(
        "gw", f"moby/{FACTORY}/s1/telemetry", [telemetry(i, now - 1000 + i) for i in range(200)]
    )
    wait_until(lambda: backend.stored() == 200, 30, what="everything published after the fix stored")
    assert backend.metric("moby_task_restarts_total") == 0


DYNSEC = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


def dynsec_client(user: str, password: str, roles: list[str]) -> dict[str, object]:
    """A client entry of Mosquitto's dynamic-security file (PBKDF2-SHA512, as mosquitto_ctrl writes)."""
    iterations, salt, digest = split_hash(hash_password(password, iterations=101))
    return {
        "username": user,
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
        "roles": [{"rolename": r} for r in roles],
    }


@pytest.fixture
def dynsec_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto whose dynamic-security plugin checks subscriptions (its acl_file does not:
    Mosquitto 2.0 grants every SUBSCRIBE and filters at delivery). ``backend`` may subscribe to
    nothing under ``moby/`` yet; ``admin`` may send dynamic-security commands."""
    if not DYNSEC.exists():
        pytest.skip("Mosquitto's dynamic-security plugin is not installed")
    b = Mosquitto(tmp_path / "mosquitto", free_port())
    control = "$CONTROL/dynamic-security/#"
    config = {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True, "subscribe": False},
        "clients": [
            dynsec_client("backend", "backend-secret", ["backend"]),
            dynsec_client("admin", "admin-secret", ["admin"]),
            dynsec_client("gw", "gw-secret", ["gateway"]),
        ],
        "groups": [],
        "roles": [
            {"rolename": "backend", "acls": []},
            {
                "rolename": "admin",
                "acls": [
                    {"acltype": "publishClientSend", "topic": control, "allow": True},
                    {"acltype": "subscribePattern", "topic": control, "allow": True},
                ],
            },
            {
                "rolename": "gateway",
                "acls": [{"acltype": "publishClientSend", "topic": "moby/#", "allow": True}],
            },
        ],
    }
    d = b.directory
    (d / "dynsec.json").write_text(json.dumps(config))
    conf = d / "mosquitto.conf"
    plugin = f"allow_anonymous false\nplugin {DYNSEC}\nplugin_opt_config_file {d / 'dynsec.json'}"
    conf.write_text(conf.read_text().replace("allow_anonymous true", plugin))
    b.start()
    yield b
    b.stop()


def test_backend_whose_subscription_the_broker_refuses_recovers_after_the_fix(
    tmp_path, dynsec_broker, influxd, db_name, backends
) -> None:
    port = dynsec_broker.port
    backend = start_backend(
        backends, tmp_path, f"mqtt://backend:backend-secret@127.0.0.1:{port}", influxd, db_name
    )
    refused = "the broker refused the subscription"
    wait_until(lambda: refused in log_of(backend), 20, what="the refused SUBACK logged")
    time.sleep(3 * CEILING_S)
    assert readiness(backend)[0] == 503
    log = log_of(backend)
    assert log.count(refused) == 1, log
    assert "0x87" in log and "'backend'" in log and "backend-secret" not in log

    # The operator grants the role what it needs, as `mosquitto_ctrl dynsec addRoleACL` does.
    grant = {
        "commands": [
            {"command": "addRoleACL", "rolename": "backend", "acltype": "subscribePattern", "topic": "moby/#",
             "allow": True},
        ]
    }  # fmt: skip
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-u", "admin", "-P", "admin-secret", "-q", "1",
         "-t", "$CONTROL/dynamic-security/v1", "-m", json.dumps(grant)],
        check=True, timeout=30,
    )  # fmt: skip
    wait_until(lambda: readiness(backend)[0] == 200, CEILING_S + 10, interval=0.1, what="ready after the fix")
    now = int(time.time() * 1000)
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-u", "gw", "-P", "gw-secret", "-q", "1",
         "-t", f"moby/{FACTORY}/s1/telemetry", "-l", "-V", "mqttv5"],
        input=b"\n".join(telemetry(i, now - 1000 + i) for i in range(50)) + b"\n", check=True, timeout=30,
    )  # fmt: skip
    wait_until(lambda: backend.stored() == 50, 30, what="stored after the fix")


def agent_process(tmp_path: Path, url: str) -> ManagedProcess:
    config = tmp_path / "edge.toml"
    config.write_text(
        f"""
factory_id = "{FACTORY}"
brokers = ["{url}"]
buffer_path = "{tmp_path / "edge-buffer.sqlite"}"
health_every_s = 1.0
reconnect_max_s = {CEILING_S}

[[sensors]]
sensor_id = "temp-1"
type = "temperature"
interval_s = 0.05

[[sensors]]
sensor_id = "hum-1"
type = "humidity"
interval_s = 0.05
"""
    )
    return ManagedProcess(
        "moby edge",
        [sys.executable, "-m", "moby", "edge", "--config", str(config)],
        log_path=tmp_path / "edge.log",
        ready=lambda: True,
    )


def seqs(influxd: Influxd, db: str, sensor: str) -> list[int]:
    res = influx_query(influxd.url, f"SELECT seq FROM /.*/ WHERE sensor_id = '{sensor}'", db)
    return sorted(v[1] for s in res[0].get("series", []) for v in s["values"])


def stop_and_check_nothing_lost(tmp_path: Path, agent: ManagedProcess, influxd: Influxd, db: str) -> None:
    agent.signal(signal.SIGTERM)
    assert agent.proc is not None and agent.proc.wait(30) == 0
    with EdgeBuffer(tmp_path / "edge-buffer.sqlite", max_bytes=1 << 30, max_age_s=86400) as buffer:
        taken = {s: buffer.next_seq(sensor_key(FACTORY, s)) for s in SENSORS}
        assert buffer.depth() == 0  # nothing left on the device
    for sensor in SENSORS:
        wait_until(
            lambda s=sensor: seqs(influxd, db, s) == list(range(taken[s])), 60, what=f"{sensor} complete"
        )
        assert taken[sensor] > 100


def test_edge_with_a_wrong_password_keeps_its_readings_and_delivers_them_after_the_fix(
    tmp_path, auth_broker, influxd, db_name, backends
) -> None:
    backend = start_backend(
        backends, tmp_path, auth_broker.url("backend", "backend-secret"), influxd, db_name
    )
    wait_until(lambda: readiness(backend)[0] == 200, 30, what="backend ready")
    agent = agent_process(tmp_path, auth_broker.url("gw", "rotated-secret")).start()
    try:
        refused = "the broker refused the connection"
        wait_until(
            lambda: log_of(agent).count(refused) == len(SENSORS), 20, what="each link's refusal logged"
        )
        time.sleep(3 * CEILING_S)
        log = log_of(agent)
        assert log.count(refused) == len(SENSORS), log  # once per link, not once per attempt
        assert "'gw'" in log and "rotated-secret" not in log and "gw-secret" not in log
        assert seqs(influxd, db_name, "temp-1") == []

        auth_broker.passwords["gw"] = "rotated-secret"
        auth_broker.reload()
        wait_until(
            lambda: len(seqs(influxd, db_name, "temp-1")) > 100,
            CEILING_S + 20,
            what="buffered readings arrive",
        )
        stop_and_check_nothing_lost(tmp_path, agent, influxd, db_name)
    finally:
        agent.stop()


def test_edge_whose_telemetry_the_acl_refuses_keeps_the_link_and_loses_nothing(
    tmp_path, auth_broker, influxd, db_name, backends
) -> None:
    gateway = [r for r in auth_broker.rules if r.username == "gw"]
    # the ACL lets the agent connect, take commands and say hello, but not publish readings
    auth_broker.rules = [
        r for r in auth_broker.rules if r.username != "gw" or not r.topic.endswith("/telemetry")
    ]
    auth_broker.reload()
    backend = start_backend(
        backends, tmp_path, auth_broker.url("backend", "backend-secret"), influxd, db_name
    )
    wait_until(lambda: readiness(backend)[0] == 200, 30, what="backend ready")
    agent = agent_process(tmp_path, auth_broker.url("gw", "gw-secret")).start()
    try:
        refused = "the broker refused a message"
        wait_until(
            lambda: log_of(agent).count(refused) == len(SENSORS), 20, what="each link's refusal logged"
        )
        time.sleep(3 * CEILING_S)
        log = log_of(agent)
        assert log.count(refused) == len(SENSORS), log
        assert "0x87" in log and "lost the broker" not in log  # the links stayed up
        assert seqs(influxd, db_name, "temp-1") == []

        auth_broker.rules = [r for r in auth_broker.rules if r.username != "gw"] + gateway
        auth_broker.reload()
        wait_until(
            lambda: len(seqs(influxd, db_name, "temp-1")) > 100, CEILING_S + 20, what="readings arrive"
        )

        def refusals_reported() -> int:
            items = backend.get("/api/v1/sensors")["items"]
            health = next(s for s in items if s["sensor_id"] == "temp-1").get("health") or {}
            return int(health.get("errors", {}).get("puback_refused", 0))

        wait_until(lambda: refusals_reported() >= 3, 20, what="refusals counted in health")
        stop_and_check_nothing_lost(tmp_path, agent, influxd, db_name)
    finally:
        agent.stop()


def test_simulator_whose_telemetry_the_acl_refuses_keeps_it_and_sends_it_after_the_fix(
    tmp_path, auth_broker, influxd, db_name, backends
) -> None:
    from tests.integration.test_simulate import assert_all_stored, simulator, stop, taken

    gateway = [r for r in auth_broker.rules if r.username == "gw"]
    auth_broker.rules = [
        r for r in auth_broker.rules if r.username != "gw" or not r.topic.endswith("/telemetry")
    ]
    auth_broker.reload()
    backend = start_backend(
        backends, tmp_path, auth_broker.url("backend", "backend-secret"), influxd, db_name
    )
    wait_until(lambda: readiness(backend)[0] == 200, 30, what="backend ready")
    sim = simulator(
        tmp_path, auth_broker.url("gw", "gw-secret"), FACTORY, "--sensors", "4", "--rate", "10"
    ).start()
    try:
        refused = "the broker refused messages"
        wait_until(lambda: refused in log_of(sim), 20, what="the refusal logged")
        time.sleep(3 * CEILING_S)  # the simulator's backoff ceiling is 5 s: at least one retry
        assert log_of(sim).count(refused) == 1
        assert "lost the broker" not in log_of(sim)
        assert backend.stored() <= 0

        auth_broker.rules = [r for r in auth_broker.rules if r.username != "gw"] + gateway
        auth_broker.reload()
        wait_until(lambda: backend.stored() > 100, 30, what="readings arrive after the fix")
        summary = stop(sim)
    finally:
        sim.stop()
    nexts, depth = taken(tmp_path, FACTORY, 4)
    assert depth == 0 == summary["left_in_buffer"] and summary["refused_by_broker"] > 0
    assert_all_stored(influxd.url, backend.db, FACTORY, nexts)
