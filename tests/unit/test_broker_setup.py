"""moby.broker without a running broker: password hashes, ACL rules, certificates, the config."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from moby.broker import acl, auth
from moby.broker.acl import Access, Principal, Role, Rule
from moby.broker.commands import broker_app
from moby.broker.pki import CertificateAuthority
from moby.broker.setup import MAX_CONNECTIONS, BrokerConfig, BrokerDir, BrokerSetupError
from moby.config import Settings
from moby.schema import QOS_POLICY, TopicKind


def test_hashes_are_what_mosquitto_passwd_writes() -> None:
    # `mosquitto_passwd -b -c pw alice secret` (Mosquitto 2.0.11)
    known = (
        "$7$101$vt5qgcT/QFG6bqfn$EmVXHy4mD2Sn3W8Ner5g4TInDnRk+9FYu0AVZZlgdEn/QVe/"
        "Sg2k46v85EA/bya2mfeLvKYBrd+vGp7pLjFyhQ=="
    )
    assert auth.verify_password("secret", known)
    assert not auth.verify_password("Secret", known)
    encoded = auth.hash_password("pw")
    assert encoded.startswith(f"$7${auth.ITERATIONS}$") and auth.verify_password("pw", encoded)
    assert auth.hash_password("pw") != encoded  # salted
    _, salt, _ = auth.split_hash(encoded)
    assert salt.isascii() and len(salt) == auth.SALT_BYTES


def test_the_password_file_refuses_names_that_would_break_it() -> None:
    with pytest.raises(ValueError):
        auth.password_file({"a:b": "x"})


def test_sensor_rules_are_its_own_topics_only() -> None:
    rules = acl.rules_for(Principal("vib-1", Role.SENSOR, "plant-a"))
    assert rules == [
        Rule("vib-1", Access.PUBLISH, "moby/plant-a/vib-1/telemetry"),
        Rule("vib-1", Access.PUBLISH, "moby/plant-a/vib-1/health"),
        Rule("vib-1", Access.PUBLISH, "moby/plant-a/vib-1/status"),
        Rule("vib-1", Access.SUBSCRIBE, "moby/plant-a/vib-1/cmd"),
    ]
    assert {r.access for r in acl.rules_for(Principal("v", Role.READONLY))} == {Access.SUBSCRIBE}
    backend = acl.rules_for(Principal("b", Role.BACKEND))
    assert Rule("b", Access.SUBSCRIBE, "moby/#") in backend
    assert Rule("b", Access.PUBLISH, "moby/+/+/cmd") in backend
    with pytest.raises(ValueError):
        acl.rules_for(Principal("s", Role.SENSOR))  # no factory


def test_acl_round_trips_and_gives_anonymous_nothing() -> None:
    rules = acl.all_rules([Principal("s1", Role.SENSOR, "f"), Principal("b", Role.BACKEND)])
    text = acl.render_mosquitto(rules)
    first = next(line for line in text.splitlines() if line and not line.startswith("#"))
    assert first.startswith("user ")
    assert acl.parse_mosquitto(text) == rules
    assert sorted(acl.parse_emqx(acl.render_emqx(rules))) == sorted(rules)
    with pytest.raises(ValueError):
        acl.parse_mosquitto("topic read #\n")


def test_qos_policy() -> None:
    assert {k: (QOS_POLICY[k].qos, QOS_POLICY[k].retain) for k in TopicKind} == {
        TopicKind.TELEMETRY: (1, False),
        TopicKind.HEALTH: (0, False),
        TopicKind.STATUS: (1, True),
        TopicKind.CMD: (2, False),
    }
    assert all(QOS_POLICY[k].why for k in TopicKind)


def test_certificates(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    client = x509.load_pem_x509_certificate(ca.issue_client("vib-1").cert_pem)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "vib-1"
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    client.verify_directly_issued_by(ca.cert)
    server = x509.load_pem_x509_certificate(ca.issue_server(["mqtt.example.com", "10.0.0.5"]).cert_pem)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["mqtt.example.com"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    crl = x509.load_pem_x509_crl(ca.crl([(client.serial_number, 0.0)]))
    assert crl.get_revoked_certificate_by_serial_number(client.serial_number) is not None
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]


def test_the_generated_config(tmp_path: Path) -> None:
    bdir = BrokerDir(tmp_path / "b")
    bdir.init(BrokerConfig(cert_port=18883, password_port=18884, local_port=11883))
    conf = bdir.conf.read_text()
    for line in (
        "allow_anonymous false",
        "per_listener_settings false",
        "persistence true",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
        "listener 11883 127.0.0.1",
        "max_packet_size 266240",
    ):
        assert line in conf.splitlines(), line
    assert conf.count("tls_version tlsv1.2") == 2  # both TLS listeners (Mosquitto itself runs it in
    # tests/integration/test_broker_security.py)


def listener_blocks(conf: str) -> dict[str, list[str]]:
    """Each ``listener`` line of a mosquitto.conf → the option lines up to the next one."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in conf.splitlines():
        if line.startswith("listener "):
            current = blocks.setdefault(line, [])
        elif current is not None and line and not line.startswith("#"):
            current.append(line)
    return blocks


def test_every_listener_binds_the_client_id_to_the_identity(tmp_path: Path) -> None:
    """Without it, any credential could connect with another client's id and take its session."""
    bdir = BrokerDir(tmp_path / "b")
    bdir.init(BrokerConfig(cert_port=18883, password_port=18884, local_port=11883))
    blocks = listener_blocks(bdir.conf.read_text())
    assert set(blocks) == {"listener 18883 0.0.0.0", "listener 18884 0.0.0.0", "listener 11883 127.0.0.1"}
    for listener, options in blocks.items():
        assert "use_username_as_clientid true" in options, listener
    assert "use_identity_as_username true" in blocks["listener 18883 0.0.0.0"]  # the CN is the username
    # no local listener unless asked for; the other two bind ids all the same
    bdir.init(BrokerConfig(cert_port=18883, password_port=18884), force=True)
    blocks = listener_blocks(bdir.conf.read_text())
    assert len(blocks) == 2 and all("use_username_as_clientid true" in o for o in blocks.values())


def test_a_gateway_with_several_connections_is_one_identity_per_connection(tmp_path: Path) -> None:
    bdir = BrokerDir(tmp_path / "b")
    bdir.init(BrokerConfig())
    bdir.add_user("gw", Role.GATEWAY, factory="f1", connections=3)
    bdir.add_user("backend", Role.BACKEND)
    passwd = dict(line.split(":", 1) for line in (bdir.dir / "passwd").read_text().splitlines())
    assert set(passwd) == {"gw", "gw.1", "gw.2", "backend"}
    assert passwd["gw"] == passwd["gw.1"] == passwd["gw.2"]  # one password
    assert auth.verify_password(bdir.password_path("gw").read_text().strip(), passwd["gw.2"])
    rules = acl.parse_mosquitto((bdir.dir / "acl").read_text())
    for identity in ("gw", "gw.1", "gw.2"):  # each with the gateway's rights, and only those
        assert {(r.access, r.topic) for r in rules if r.username == identity} == {
            (r.access, r.topic) for r in acl.rules_for(Principal("gw", Role.GATEWAY, "f1"))
        }
    assert not (bdir.dir / "users" / "gw.1.password").exists()

    # a name another principal connects as is taken, both ways round
    for taken in (lambda: bdir.add_sensor("gw.1", "f1"), lambda: bdir.add_user("gw.2", Role.READONLY)):
        with pytest.raises(BrokerSetupError, match="connection identity of 'gw'"):
            taken()
    bdir.add_user("x.1", Role.READONLY)
    with pytest.raises(BrokerSetupError, match=r"connection identity of 'x\.1'"):
        bdir.add_user("x", Role.GATEWAY, factory="f1", connections=2)
    # only gateways hold several connections; bounded
    with pytest.raises(BrokerSetupError, match="only a gateway"):
        bdir.add_user("b2", Role.BACKEND, connections=2)
    for bad in (0, MAX_CONNECTIONS + 1):
        with pytest.raises(BrokerSetupError, match="between 1 and"):
            bdir.add_user("g2", Role.GATEWAY, factory="f1", connections=bad)

    # ensure_user (moby up) resizes a gateway and keeps its password
    password = bdir.password_path("gw").read_text().strip()
    assert bdir.ensure_user("gw", Role.GATEWAY, factory="f1", connections=1) == password
    passwd = dict(line.split(":", 1) for line in (bdir.dir / "passwd").read_text().splitlines())
    assert {"gw.1", "gw.2"}.isdisjoint(passwd) and "gw" in passwd
    assert bdir.ensure_user("gw", Role.GATEWAY, factory="f1", connections=2) == password
    assert bdir.load().identities("gw") == ["gw", "gw.1"]
    bdir.remove("gw")
    assert "gw.1" not in (bdir.dir / "passwd").read_text()


def test_the_backends_client_id_is_its_broker_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOBY_MQTT_CLIENT_ID", raising=False)
    monkeypatch.delenv("MOBY_CONFIG", raising=False)
    with_user = Settings(mqtt_url="mqtts://backend-2:pw@mqtt.example.com:8884")
    assert with_user.mqtt_client_id == "backend-2" and with_user.client_id_conflict() is None
    anonymous = Settings(mqtt_url="mqtt://127.0.0.1:1883")  # a development broker without users
    assert anonymous.mqtt_client_id == f"moby-backend-{socket.gethostname()}"
    assert anonymous.client_id_conflict() is None
    assert Settings(mqtt_url="mqtt://127.0.0.1:1883", mqtt_client_id="b7").client_id_conflict() is None
    same = Settings(mqtt_url="mqtts://backend-2:pw@h:8884", mqtt_client_id="backend-2")
    assert same.client_id_conflict() is None
    other = Settings(mqtt_url="mqtts://backend:s3cr3t@h:8884", mqtt_client_id="moby-backend-1")
    problem = other.client_id_conflict()
    assert problem is not None and "'moby-backend-1'" in problem and "'backend'" in problem
    assert "s3cr3t" not in problem  # the URL's password is not repeated


def test_moby_serve_refuses_a_client_id_the_broker_would_replace(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MOBY_MQTT_URL": "mqtts://backend:secret-pw@127.0.0.1:1/",
        "MOBY_MQTT_CLIENT_ID": "moby-backend-1",
        "MOBY_DATA_DIR": str(tmp_path),
    }
    env.pop("MOBY_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "moby", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "MOBY_MQTT_CLIENT_ID='moby-backend-1'" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "secret-pw" not in done.stderr
    assert not (tmp_path / "queue.sqlite").exists()  # refused before anything started


def test_commands_refuse_what_would_break_the_setup(tmp_path: Path) -> None:
    bdir = BrokerDir(tmp_path / "b")
    with pytest.raises(BrokerSetupError):
        bdir.add_sensor("s1", "f1")  # no init yet
    bdir.init(BrokerConfig())
    with pytest.raises(BrokerSetupError):
        bdir.init(BrokerConfig())  # would replace the CA
    bdir.add_sensor("s1", "f1")
    for bad in (lambda: bdir.add_sensor("s1", "f1"), lambda: bdir.add_user("s1", Role.BACKEND)):
        with pytest.raises(BrokerSetupError):
            bad()  # one namespace: a user named like a sensor would get its topics
    with pytest.raises(BrokerSetupError):
        bdir.add_sensor("bad/id", "f1")
    with pytest.raises(BrokerSetupError):
        bdir.add_user("g", Role.GATEWAY)  # no factory
    with pytest.raises(BrokerSetupError):
        bdir.remove("nobody")


def test_render_brings_an_older_setup_up_to_date(tmp_path: Path) -> None:
    """`moby broker render`: a mosquitto.conf written before client ids were bound gets the binding."""
    runner = CliRunner()
    missing = runner.invoke(broker_app, ["render", "--dir", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "run `moby broker init` first" in " ".join(missing.output.split())
    bdir = BrokerDir(tmp_path / "b")
    bdir.init(BrokerConfig(cert_port=18883, password_port=18884))
    bdir.add_user("gw", Role.GATEWAY, factory="f1", connections=2)
    old = bdir.conf.read_text().replace("use_username_as_clientid true\n", "")
    bdir.conf.write_text(old)
    (bdir.dir / "passwd").write_text("")
    done = runner.invoke(broker_app, ["render", "--dir", str(bdir.dir)])
    assert done.exit_code == 0, done.output
    assert all("use_username_as_clientid true" in o for o in listener_blocks(bdir.conf.read_text()).values())
    assert [line.split(":")[0] for line in (bdir.dir / "passwd").read_text().splitlines()] == ["gw", "gw.1"]
