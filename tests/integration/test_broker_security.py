"""The production broker setup (`moby broker`) against a real Mosquitto started from its config.

Every refusal is checked next to the matching success, so a test cannot pass because nothing
could connect at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from moby.broker.acl import Role
from moby.broker.pki import CertificateAuthority
from moby.broker.setup import BrokerConfig, BrokerDir, SecureMosquitto
from moby.mqtt import MqttConnection, MqttError, SessionOptions, open_connection, subscribe
from moby.net import tls_context
from moby.procs import ManagedProcess, free_port
from tests.support import Backend, influx_query, wait_until

pytestmark = pytest.mark.integration

FACTORY = f"sec-{uuid.uuid4().hex[:6]}"
# CONNACK 0x86 bad user name or password, 0x87 not authorised
NOT_AUTHORISED = "CONNACK refused: (134|135)"
REFUSED = (MqttError, OSError, ConnectionError, TimeoutError, ssl.SSLError)


@dataclass
class Setup:
    bdir: BrokerDir
    broker: SecureMosquitto
    cert_port: int
    password_port: int
    local_port: int
    passwords: dict[str, str] = field(default_factory=dict)

    def password(self, name: str) -> str:
        return self.bdir.password_path(name).read_text().strip()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    bdir = BrokerDir(tmp_path_factory.mktemp("secure-broker") / "broker")
    ports = free_port(), free_port(), free_port()
    bdir.init(BrokerConfig(cert_port=ports[0], password_port=ports[1], local_port=ports[2], bind="127.0.0.1"))
    for sensor in ("sa", "sb"):
        bdir.add_sensor(sensor, FACTORY, password=True)
    bdir.add_user("backend", Role.BACKEND)
    bdir.add_user("viewer", Role.READONLY)
    broker = SecureMosquitto(bdir)
    broker.start()
    yield Setup(bdir, broker, *ports)
    broker.stop()


class Client:
    """One MQTT connection that records what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.conn: MqttConnection | None = None

    def _on_publish(self, conn: MqttConnection, topic: str, payload: bytes, qos: int, mid: int) -> None:
        self.received.append((topic, payload))
        if qos == 1:
            conn.ack([mid])

    async def connect(
        self,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> Client:
        options = SessionOptions(
            client_id=f"t-{uuid.uuid4().hex[:8]}",
            username=user,
            password=password,
            clean_start=True,
            session_expiry_s=0,
        )
        self.conn, _ = await open_connection(
            "127.0.0.1", port, options, self._on_publish, ssl_context=tls, timeout_s=5
        )
        return self

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.disconnect()


def ca_only(s: Setup) -> ssl.SSLContext:
    return tls_context(s.bdir.ca_cert)


def sensor_tls(s: Setup, sensor: str, bundle: Path | None = None) -> ssl.SSLContext:
    bundle = bundle or s.bdir.sensor_dir(sensor)
    return tls_context(bundle / "ca.crt", bundle / "client.crt", bundle / "client.key")


async def backend(s: Setup) -> Client:
    return await Client().connect(
        s.password_port, tls=ca_only(s), user="backend", password=s.password("backend")
    )


async def test_anonymous_connections_are_refused(secure: Setup) -> None:
    with pytest.raises(MqttError, match=NOT_AUTHORISED):
        await Client().connect(secure.password_port, tls=ca_only(secure))
    with pytest.raises(MqttError, match=NOT_AUTHORISED):
        await Client().connect(secure.local_port)  # the loopback listener wants a password too
    ok = await Client().connect(secure.local_port, user="backend", password=secure.password("backend"))
    await ok.close()


async def test_wrong_password_is_refused(secure: Setup) -> None:
    with pytest.raises(MqttError, match=NOT_AUTHORISED):
        await Client().connect(secure.password_port, tls=ca_only(secure), user="backend", password="guess")
    with pytest.raises(MqttError, match=NOT_AUTHORISED):  # another principal's password
        await Client().connect(
            secure.password_port, tls=ca_only(secure), user="backend", password=secure.password("viewer")
        )
    ok = await backend(secure)
    await ok.close()


async def test_plain_tcp_is_refused_on_the_tls_ports(secure: Setup) -> None:
    for port in (secure.password_port, secure.cert_port):
        with pytest.raises(REFUSED):
            await Client().connect(port, user="backend", password=secure.password("backend"))


async def test_client_certificates_from_another_ca_or_none_are_refused(secure: Setup, tmp_path: Path) -> None:
    rogue = CertificateAuthority.create(tmp_path / "rogue")
    issued = rogue.issue_client("sa")  # the right name, the wrong CA
    (tmp_path / "c.crt").write_bytes(issued.cert_pem)
    (tmp_path / "c.key").write_bytes(issued.key_pem)
    forged = tls_context(secure.bdir.ca_cert, tmp_path / "c.crt", tmp_path / "c.key")
    with pytest.raises(REFUSED):
        await Client().connect(secure.cert_port, tls=forged)
    with pytest.raises(REFUSED):  # no certificate at all, even with a valid password
        await Client().connect(secure.cert_port, tls=ca_only(secure), user="sa", password="x")
    ok = await Client().connect(secure.cert_port, tls=sensor_tls(secure, "sa"))
    await ok.close()


async def test_the_client_must_verify_the_broker(secure: Setup, tmp_path: Path) -> None:
    """A sensor trusting only our CA does not talk to a broker certified by someone else."""
    CertificateAuthority.create(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        await Client().connect(secure.password_port, tls=tls_context(tmp_path / "other" / "ca.crt"))


async def test_a_revoked_sensor_is_refused_after_reload(secure: Setup, tmp_path: Path) -> None:
    secure.bdir.add_sensor("srev", FACTORY, password=True)
    assert secure.bdir.reload()
    await asyncio.sleep(0.5)
    kept = tmp_path / "stolen"  # what a thief copied off the device before it was revoked
    shutil.copytree(secure.bdir.sensor_dir("srev"), kept)
    password = (kept / "agent.toml").read_text().split("mqtts://srev:")[1].split("@")[0]
    ok = await Client().connect(secure.cert_port, tls=sensor_tls(secure, "srev", kept))
    await ok.close()
    ok = await Client().connect(secure.password_port, tls=ca_only(secure), user="srev", password=password)
    await ok.close()

    watcher = await backend(secure)
    assert watcher.conn is not None
    await subscribe(watcher.conn, ["moby/#"])
    live = await Client().connect(secure.cert_port, tls=sensor_tls(secure, "srev", kept))
    assert live.conn is not None
    topic = f"moby/{FACTORY}/srev/health"
    await live.conn.publish(topic, b"before", qos=1)
    await _until(lambda: (topic, b"before") in watcher.received)

    secure.bdir.remove("srev")
    assert not secure.bdir.sensor_dir("srev").exists()
    assert secure.bdir.reload()
    await asyncio.sleep(0.5)
    # a connection opened before the revocation stays up, but is no longer allowed anything
    with contextlib.suppress(MqttError, ConnectionError):
        await asyncio.wait_for(live.conn.publish(topic, b"after", qos=1), 5)
    await asyncio.sleep(0.5)
    assert (topic, b"after") not in watcher.received
    await watcher.close()
    with pytest.raises(REFUSED):
        await Client().connect(secure.cert_port, tls=sensor_tls(secure, "srev", kept))
    with pytest.raises(MqttError, match=NOT_AUTHORISED):
        await Client().connect(secure.password_port, tls=ca_only(secure), user="srev", password=password)
    still = await Client().connect(secure.cert_port, tls=sensor_tls(secure, "sa"))  # others unaffected
    await still.close()


async def test_a_sensor_cannot_publish_as_another_sensor(secure: Setup) -> None:
    watcher = await backend(secure)
    assert watcher.conn is not None
    await subscribe(watcher.conn, ["moby/#"])
    sensor_a = await Client().connect(secure.cert_port, tls=sensor_tls(secure, "sa"))
    assert sensor_a.conn is not None
    forged = f"moby/{FACTORY}/sb/telemetry"
    other_factory = "moby/elsewhere/sa/telemetry"
    for topic in (forged, other_factory, f"moby/{FACTORY}/sb/cmd"):
        with contextlib.suppress(MqttError):  # refused with a reason code is fine; delivered is not
            await asyncio.wait_for(sensor_a.conn.publish(topic, b"forged", qos=1), 5)
    own = f"moby/{FACTORY}/sa/telemetry"
    await sensor_a.conn.publish(own, b"genuine", qos=1)
    await _until(lambda: (own, b"genuine") in watcher.received)
    assert [t for t, p in watcher.received if p == b"forged"] == []
    await sensor_a.close()
    await watcher.close()


async def test_a_sensor_subscribing_to_everything_gets_only_its_own_commands(secure: Setup) -> None:
    spy = await Client().connect(secure.cert_port, tls=sensor_tls(secure, "sa"))
    assert spy.conn is not None
    with contextlib.suppress(MqttError):  # a refused subscription is as good as an empty one
        await subscribe(spy.conn, ["moby/#", "#"], qos=1)
    other = await Client().connect(secure.cert_port, tls=sensor_tls(secure, "sb"))
    assert other.conn is not None
    await other.conn.publish(f"moby/{FACTORY}/sb/telemetry", b"b-data", qos=1)
    boss = await backend(secure)
    assert boss.conn is not None
    await boss.conn.publish(f"moby/{FACTORY}/sb/cmd", b"for-b", qos=1)
    await boss.conn.publish(f"moby/{FACTORY}/sa/cmd", b"for-a", qos=1)
    await _until(lambda: bool(spy.received))
    await asyncio.sleep(0.5)
    # (once per matching subscription: "moby/#" and "#" overlap)
    assert set(spy.received) == {(f"moby/{FACTORY}/sa/cmd", b"for-a")}
    for c in (spy, other, boss):
        await c.close()


async def test_readonly_users_cannot_publish(secure: Setup) -> None:
    watcher = await backend(secure)
    assert watcher.conn is not None
    await subscribe(watcher.conn, ["moby/#"])
    viewer = await Client().connect(
        secure.password_port, tls=ca_only(secure), user="viewer", password=secure.password("viewer")
    )
    assert viewer.conn is not None
    await subscribe(viewer.conn, ["moby/#"])  # reading is what it is for
    for topic in (f"moby/{FACTORY}/sa/cmd", f"moby/{FACTORY}/sa/telemetry"):
        with contextlib.suppress(MqttError):
            await asyncio.wait_for(viewer.conn.publish(topic, b"from-viewer", qos=1), 5)
    marker = await Client().connect(secure.cert_port, tls=sensor_tls(secure, "sb"))
    assert marker.conn is not None
    await marker.conn.publish(f"moby/{FACTORY}/sb/health", b"marker", qos=1)
    await _until(lambda: any(p == b"marker" for _, p in viewer.received))
    await _until(lambda: any(p == b"marker" for _, p in watcher.received))
    assert not [p for _, p in watcher.received if p == b"from-viewer"]
    for c in (watcher, viewer, marker):
        await c.close()


def test_secrets_are_owner_only_and_never_printed(tmp_path: Path) -> None:
    directory = tmp_path / "b"
    env_cmd = [sys.executable, "-m", "moby", "broker"]
    outputs = []
    for args in (
        ["init", "--dir", str(directory)],
        ["add-sensor", "s1", "--factory", "f1", "--password", "--dir", str(directory)],
        ["add-user", "svc", "--role", "backend", "--dir", str(directory)],
        ["list", "--dir", str(directory)],
    ):
        done = subprocess.run([*env_cmd, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    printed = "\n".join(outputs)
    password = (directory / "users" / "svc.password").read_text().strip()
    assert len(password) >= 24
    assert password not in printed
    assert "PRIVATE KEY" not in printed and "$7$" not in printed

    secret_files = ["ca/ca.key", "server/server.key", "passwd", "acl", "registry.json", "users/svc.password"]
    secret_files += ["sensors/s1/client.key", "sensors/s1/agent.toml"]
    for name in secret_files:
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    for path in [directory, *(p for p in directory.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    # nothing else is readable by others except certificates and the config
    for path in directory.rglob("*"):
        if path.is_file() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            assert path.suffix in (".crt", ".pem", ".conf"), path
    assert password not in (directory / "passwd").read_text()  # only its hash is kept


async def _until(predicate: Callable[[], bool], within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def test_the_pipeline_runs_over_mqtts_with_these_credentials(secure: Setup, influxd, tmp_path: Path) -> None:
    """`moby edge` with two bundles' certificates → broker → `moby serve` as a backend user → InfluxDB."""
    for sensor in ("pa", "pb"):
        secure.bdir.add_sensor(sensor, FACTORY)
    assert secure.bdir.reload()
    device = tmp_path / "device"  # the bundle as copied onto the device
    shutil.copytree(secure.bdir.sensor_dir("pa"), device)
    shutil.copytree(secure.bdir.sensor_dir("pb"), device / "pb")
    config = (device / "agent.toml").read_text()
    assert f'brokers = ["mqtts://localhost:{secure.cert_port}"]' in config
    config += (
        'interval_s = 0.2\n\n[[sensors]]\nsensor_id = "pb"\ntype = "temperature"\ninterval_s = 0.2\n'
        'cert_file = "pb/client.crt"\nkey_file = "pb/client.key"\n'
    )
    (device / "agent.toml").write_text(config)

    db = f"t_{uuid.uuid4().hex[:10]}"
    backend = Backend(
        data_dir=tmp_path / "backend",
        mqtt_url=f"mqtts://backend:{secure.password('backend')}@127.0.0.1:{secure.password_port}",
        influx_url=influxd.url,
        db=db,
        client_id=f"moby-test-{uuid.uuid4().hex[:8]}",
        extra_env={"MOBY_MQTT_CA_FILE": str(secure.bdir.ca_cert)},
    ).start(timeout_s=60)
    agent = ManagedProcess(
        "moby edge",
        [sys.executable, "-m", "moby", "edge", "--config", "agent.toml"],
        log_path=tmp_path / "edge.log",
        ready=lambda: True,
        cwd=device,
    ).start()
    try:

        def stored(sensor: str) -> int:
            res = influx_query(influxd.url, f"SELECT count(seq) FROM /.*/ WHERE sensor_id = '{sensor}'", db)
            return sum(s["values"][0][1] for s in res[0].get("series", []))

        wait_until(
            lambda: stored("pa") >= 5 and stored("pb") >= 5, 45, what="readings of both sensors stored"
        )
        sensors = {s["sensor_id"]: s for s in backend.get("/api/v1/sensors")["items"]}
        assert {"pa", "pb"} <= set(sensors)  # their retained births reached the backend too
        log = (tmp_path / "edge.log").read_text() + backend.log_path.read_text()
        assert secure.password("backend") not in log  # the URL's password is never logged
    finally:
        agent.stop()
        backend.stop()
