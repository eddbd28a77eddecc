"""moby.broker without a running broker: password hashes, ACL rules, certificates, the config."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from moby.broker import acl, auth
from moby.broker.acl import Access, Principal, Role, Rule
from moby.broker.pki import CertificateAuthority
from moby.broker.setup import BrokerConfig, BrokerDir, BrokerSetupError
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
