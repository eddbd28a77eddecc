"""deploy/emqx cannot run here (no Docker): parse its files and check them against `moby broker`."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyhocon import ConfigFactory

from moby.broker import acl, emqx
from moby.broker.acl import Role
from moby.broker.setup import BrokerConfig, BrokerDir, Limits
from moby.net import MqttEndpoint

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "emqx"
DEFAULTS = BrokerConfig()
NODES = ("emqx1", "emqx2", "emqx3")


@pytest.fixture(scope="module")
def conf() -> Any:
    return ConfigFactory.parse_file(str(DEPLOY / "emqx.conf"), resolve=False)


@pytest.fixture(scope="module")
def compose() -> Any:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_listeners_match_the_mosquitto_setup(conf: Any) -> None:
    sensors = conf["listeners"]["ssl"]["sensors"]
    passwords = conf["listeners"]["ssl"]["passwords"]
    assert sensors["bind"].endswith(f":{DEFAULTS.cert_port}")
    assert passwords["bind"].endswith(f":{DEFAULTS.password_port}")
    for listener in (sensors, passwords):
        ssl = listener["ssl_options"]
        assert set(ssl["versions"]) <= {"tlsv1.2", "tlsv1.3"}
        assert ssl["certfile"] == f"{emqx.MOUNT}/server.crt"
        assert ssl["keyfile"] == f"{emqx.MOUNT}/server.key"
    assert sensors["ssl_options"]["verify"] == "verify_peer"
    assert sensors["ssl_options"]["fail_if_no_peer_cert"] is True
    assert sensors["ssl_options"]["cacertfile"] == f"{emqx.MOUNT}/ca.crt"
    zone = conf["zones"][sensors["zone"]]["mqtt"]
    assert zone["peer_cert_as_username"] == "cn" and zone["peer_cert_as_clientid"] == "cn"
    assert passwords.get("enable_authn", True) is not False  # passwords are checked there
    for plain in ("tcp", "ws", "wss"):
        assert conf["listeners"][plain]["default"]["enable"] is False  # no anonymous way in
    assert conf["mqtt"]["max_packet_size"] == Limits().max_packet_size


def test_every_listener_binds_the_client_id_to_the_identity(conf: Any) -> None:
    """As `use_username_as_clientid` on every Mosquitto listener: no credential can connect with
    another client's id and take over its session."""
    assert conf["mqtt"]["use_username_as_clientid"] is True  # the default zone: the password listener
    listeners = conf["listeners"]["ssl"]
    assert "zone" not in listeners["passwords"]
    sensors = conf["zones"][listeners["sensors"]["zone"]]["mqtt"]
    assert sensors["use_username_as_clientid"] is True and sensors["peer_cert_as_username"] == "cn"
    # a CONNECT without a username would keep the client id it asked for: refused at once
    assert listeners["passwords"]["enable_authn"] == "quick_deny_anonymous"


def test_users_and_acl_come_from_the_exported_files(conf: Any) -> None:
    (authn,) = conf["authentication"]
    assert authn["bootstrap_file"] == f"{emqx.MOUNT}/users.csv" and authn["bootstrap_type"] == "hash"
    assert dict(authn["password_hash_algorithm"]) == emqx.PBKDF2
    authz = conf["authorization"]
    assert authz["no_match"] == "deny"
    (source,) = authz["sources"]
    assert source["type"] == "file" and source["path"] == f"{emqx.MOUNT}/acl.conf"
    referenced = {authn["bootstrap_file"], source["path"]}
    referenced |= {
        v for v in conf["listeners"]["ssl"]["sensors"]["ssl_options"].values() if isinstance(v, str)
    }
    assert referenced - {"verify_peer"} == {f"{emqx.MOUNT}/{name}" for name in emqx.FILES}


def test_three_nodes_a_load_balancer_and_shared_subscriptions(conf: Any, compose: Any) -> None:
    services = compose["services"]
    seeds = set(conf["cluster"]["static"]["seeds"])
    for node in NODES:
        svc = services[node]
        assert f"emqx@{svc['hostname']}" in seeds
        assert svc["environment"]["EMQX_NODE__NAME"] == f"emqx@{svc['hostname']}"
        assert f"./secrets/emqx:{emqx.MOUNT}:ro" in svc["volumes"]
        assert "./emqx.conf:/opt/emqx/etc/emqx.conf:ro" in svc["volumes"]
    assert len(seeds) == len(NODES)
    lb = services["haproxy"]
    assert set(lb["ports"]) == {f"{p}:{p}" for p in (DEFAULTS.cert_port, DEFAULTS.password_port)}
    haproxy = (DEPLOY / "haproxy.cfg").read_text()
    for port in (DEFAULTS.cert_port, DEFAULTS.password_port):
        assert f"bind :{port}" in haproxy
        for node in NODES:
            assert f"{services[node]['hostname']}:{port} check" in haproxy
    backends = [s for name, s in services.items() if name.startswith("backend")]
    assert len(backends) >= 2
    users, groups = set(), set()
    header = (DEPLOY / "docker-compose.yml").read_text().split("\nx-emqx")[0]
    for svc in backends:
        env = svc["environment"]
        groups.add(env["MOBY_MQTT_SHARE_GROUP"])
        endpoint = MqttEndpoint.parse(re.sub(r"\$\{[A-Z0-9_]+:\?\}", "x", env["MOBY_MQTT_URL"]))
        assert endpoint.tls and endpoint.port == DEFAULTS.password_port
        assert endpoint.host in lb["networks"]["moby"]["aliases"]
        assert endpoint.username is not None
        # The broker makes the username the client id: `moby serve` refuses another one.
        assert env.get("MOBY_MQTT_CLIENT_ID", endpoint.username) == endpoint.username
        assert f"moby broker add-user {endpoint.username} --role backend" in header  # how to create it
        users.add(endpoint.username)
    assert len(users) == len(backends)  # a user, so a session, each; the share group splits the stream
    assert len(groups) == 1 and groups != {""}


def test_the_exported_acl_and_users_equal_the_mosquitto_ones(tmp_path: Path) -> None:
    bdir = BrokerDir(tmp_path / "broker")
    bdir.init(BrokerConfig())
    bdir.add_sensor("vib-1", "plant-a", password=True)
    bdir.add_sensor("temp-9", "plant-b")
    for name, role in (("backend", Role.BACKEND), ("ops", Role.OPERATOR), ("view", Role.READONLY)):
        bdir.add_user(name, role)
    bdir.add_user("gw", Role.GATEWAY, factory="plant-a", connections=2)
    out = tmp_path / "emqx"
    emqx.export(bdir, out)

    mosquitto_rules = acl.parse_mosquitto((bdir.dir / "acl").read_text())
    emqx_rules = acl.parse_emqx((out / "acl.conf").read_text())
    assert sorted(emqx_rules) == sorted(mosquitto_rules)
    assert {r.username for r in emqx_rules} == {"vib-1", "temp-9", "backend", "ops", "view", "gw", "gw.1"}

    with open(out / "users.csv") as f:
        users = {row["user_id"]: row for row in csv.DictReader(f)}
    # temp-9 has only a certificate; the gateway's second connection is an identity of its own
    assert set(users) == {"backend", "ops", "view", "gw", "gw.1", "vib-1"}
    for name, owner in (("backend", "backend"), ("gw", "gw"), ("gw.1", "gw")):
        password = bdir.password_path(owner).read_text().strip()
        row = users[name]
        # what EMQX's pbkdf2 authenticator computes from the password the client sends
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), row["salt"].encode(), 20000, 64)
        assert digest.hex() == row["password_hash"]
        assert row["is_superuser"] == "false"
    assert (out / "server.key").stat().st_mode & 0o077 == 0
    assert (out / "users.csv").stat().st_mode & 0o077 == 0
