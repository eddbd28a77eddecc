"""The access policy's pure parts: loopback detection, when tokens are required, credentials as
clients send them, roles, the Host allow-list and cross-site detection."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from moby.access import (
    ANONYMOUS,
    AccessConfigError,
    AccessPolicy,
    Refusal,
    bearer_credential,
    influx_credential,
    is_loopback,
    tokens_required,
)
from moby.config import Settings
from moby.tokens import Role, TokenStore
from moby.webguard import AllowedHosts, cross_site, parse_host


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.2",
        "127.255.255.254",
        "::1",
        "[::1]",
        "localhost",
        "LOCALHOST.",
        "::ffff:127.0.0.1",
    ],
)
def test_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "",
        "192.0.2.2",
        "10.0.0.1",
        "fd00::2",
        "::ffff:10.0.0.1",
        "example.com",
        "localhost.example.com",
        "127.0.0.1.nip.io",
        socket.gethostname(),  # a name may resolve anywhere tomorrow: the safe answer
    ],
)
def test_beyond_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_when_tokens_are_required() -> None:
    assert not tokens_required("auto", ["127.0.0.1"])
    assert not tokens_required("auto", ["127.0.0.1", "::1"])
    assert tokens_required("auto", ["0.0.0.0"])
    assert tokens_required("auto", ["127.0.0.1", "192.0.2.2"])  # any listener beyond loopback
    assert tokens_required("required", ["127.0.0.1"])
    assert not tokens_required("off", ["127.0.0.1"])
    with pytest.raises(AccessConfigError) as refused:
        tokens_required("off", ["127.0.0.1", "0.0.0.0"])
    message = str(refused.value)
    assert "\n" not in message and "MOBY_API_AUTH=off" in message and "0.0.0.0" in message


def test_the_old_proxy_password_is_refused_not_ignored(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, proxy_username="grafana", proxy_password="s3cret")
    with pytest.raises(AccessConfigError, match="MOBY_PROXY_USERNAME/MOBY_PROXY_PASSWORD"):
        AccessPolicy.from_settings(settings, ["127.0.0.1"])


def test_the_policy_from_settings(tmp_path: Path) -> None:
    loopback = AccessPolicy.from_settings(Settings(data_dir=tmp_path), ["127.0.0.1"])
    assert not loopback.required and loopback.beyond_loopback == ()
    wide = AccessPolicy.from_settings(Settings(data_dir=tmp_path), ["0.0.0.0"])
    assert wide.required and wide.beyond_loopback == ("0.0.0.0",)
    assert wide.store is not None and wide.store.path == tmp_path / "api-tokens.json"
    named = AccessPolicy.from_settings(
        Settings(data_dir=tmp_path, api_auth="required", api_tokens_file=tmp_path / "t.json"), ["127.0.0.1"]
    )
    assert named.required and named.store is not None and named.store.path == tmp_path / "t.json"


# --- credentials --------------------------------------------------------------------------------------
TOKEN = "moby_0123456789abcdef_" + "A" * 43


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_api_takes_bearer_tokens_only() -> None:
    assert bearer_credential({"authorization": f"Bearer {TOKEN}"}) == TOKEN
    assert bearer_credential({"authorization": f"bearer  {TOKEN} "}) == TOKEN
    assert bearer_credential({"authorization": basic("x", TOKEN)}) is None
    assert bearer_credential({}) is None


@pytest.mark.parametrize(
    ("headers", "params", "expected"),
    [
        ({"authorization": f"Bearer {TOKEN}"}, {}, TOKEN),
        ({"authorization": basic("grafana", TOKEN)}, {}, TOKEN),  # Grafana's basic auth
        ({"authorization": basic("", TOKEN)}, {}, TOKEN),
        ({"authorization": f"Token grafana:{TOKEN}"}, {}, TOKEN),  # InfluxDB 1.8's scheme
        ({"authorization": f"Token {TOKEN}"}, {}, TOKEN),
        ({}, {"u": "grafana", "p": TOKEN}, TOKEN),  # Grafana's user/password, the influx CLI
        ({}, {"p": TOKEN}, TOKEN),
        ({"authorization": f"Bearer {TOKEN}"}, {"p": "other"}, TOKEN),  # the header wins
        ({"authorization": basic("grafana", "")}, {}, None),  # an unset $MOBY_GRAFANA_TOKEN
        ({}, {"u": "grafana", "p": ""}, None),
        ({}, {}, None),
    ],
)
def test_the_proxy_takes_the_token_as_influxdb_clients_send_credentials(
    headers: dict[str, str], params: dict[str, str], expected: str | None
) -> None:
    assert influx_credential(headers, params) == expected


def test_unreadable_basic_auth_is_a_wrong_credential_not_none() -> None:
    got = influx_credential({"authorization": "Basic !!!not-base64"}, {"p": TOKEN})
    assert got is not None and got != TOKEN


# --- roles -------------------------------------------------------------------------------------------
@pytest.fixture
def policy(tmp_path: Path) -> tuple[AccessPolicy, dict[str, str]]:
    store = TokenStore(tmp_path / "tokens.json")
    tokens = {role.label: store.create(role)[1] for role in Role}
    record, revoked = store.create(Role.ADMIN, "gone")
    store.revoke(record.id)
    tokens["revoked"] = revoked
    return AccessPolicy(store, required=True), tokens


def test_each_role_may_do_what_the_roles_below_it_may(policy: tuple[AccessPolicy, dict[str, str]]) -> None:
    access, tokens = policy
    for holder in Role:
        for needed in Role:
            token = tokens[holder.label]
            if holder >= needed:
                identity = access.authorize(token, needed, "x")
                assert identity.role is holder and identity.token_id == token.split("_")[1]
                assert identity.key == f"token:{identity.token_id}" and token not in identity.key
            else:
                with pytest.raises(Refusal) as refused:
                    access.authorize(token, needed, "GET /x")
                assert refused.value.status == 403
                assert (
                    f"role {holder.label}" in refused.value.message and needed.label in refused.value.message
                )


@pytest.mark.parametrize("credential", [None, "", "revoked", "garbage", "moby_0123456789abcdef_" + "B" * 43])
def test_no_or_a_bad_token_is_401(
    policy: tuple[AccessPolicy, dict[str, str]], credential: str | None
) -> None:
    access, tokens = policy
    with pytest.raises(Refusal) as refused:
        access.authorize(tokens.get(credential or "", credential), Role.VIEWER, "GET /x")
    assert refused.value.status == 401
    assert refused.value.missing == (not credential)


def test_not_required_means_anonymous_with_every_role(policy: tuple[AccessPolicy, dict[str, str]]) -> None:
    access, _ = policy
    open_policy = AccessPolicy(access.store, required=False)
    for credential in (None, "garbage"):
        assert open_policy.authorize(credential, Role.ADMIN, "x") is ANONYMOUS
    assert ANONYMOUS.key == "anonymous"


# --- Host allow-list and cross-site detection ----------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8000", "localhost"),
        ("moby.example.com.", "moby.example.com"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("", None),
        ("a b", None),
        ("host:port", None),
        ("[::1", None),
        ("[::1]x", None),
        ("[nope]:80", None),
        ("evil.example:80:80", None),
        ("x" * 300, None),
    ],
)
def test_host_headers_are_parsed_exactly(header: str, host: str | None) -> None:
    assert parse_host(header) == host


def test_the_default_allowed_hosts() -> None:
    hosts = AllowedHosts.build("", ["127.0.0.1"])
    for ok in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "192.0.2.2:8000"):
        assert hosts.allows(ok), ok  # names of loopback, and any address literal
    for refused in ("evil.example", "evil.example:8000", "localhost.evil.example", "", None):
        assert not hosts.allows(refused), refused
    named = AllowedHosts.build("", ["moby.internal"])
    assert named.allows("moby.internal:8000") and not named.allows(socket.gethostname())
    everywhere = AllowedHosts.build("", ["0.0.0.0"])
    assert everywhere.allows(socket.gethostname())  # this machine's name when on every interface


def test_allowed_hosts_are_configured() -> None:
    hosts = AllowedHosts.build("moby.example.com, grafana-backend  moby-api", ["127.0.0.1"])
    for ok in ("moby.example.com", "MOBY.example.com:443", "grafana-backend:8000", "moby-api"):
        assert hosts.allows(ok)
    assert not hosts.allows("evil.example")
    assert AllowedHosts.build("*", ["127.0.0.1"]).allows("evil.example")
    for bad in ("moby.example.com:8000", "http://moby", "a b/c", "moby_api!"):
        with pytest.raises(AccessConfigError, match="MOBY_API_ALLOWED_HOSTS"):
            AllowedHosts.build(bad, ["127.0.0.1"])


@pytest.mark.parametrize(
    ("headers", "cross"),
    [
        ({}, False),  # not a browser: curl, Grafana's server side, Prometheus
        ({"sec-fetch-site": "same-origin"}, False),
        ({"sec-fetch-site": "none"}, False),  # typed in, a bookmark
        ({"sec-fetch-site": "cross-site"}, True),
        ({"sec-fetch-site": "same-site"}, True),  # another port of localhost is another web app
        ({"sec-fetch-site": "same-origin", "origin": "http://evil.example"}, False),  # the browser's word
        ({"origin": "http://localhost:8000", "host": "localhost:8000"}, False),
        ({"origin": "https://localhost:8000", "host": "localhost:8000"}, False),
        ({"origin": "http://localhost:3000", "host": "localhost:8000"}, True),
        ({"origin": "http://evil.example", "host": "localhost:8000"}, True),
        ({"origin": "null", "host": "localhost:8000"}, True),
    ],
)
def test_cross_site_requests_are_recognised(headers: dict[str, str], cross: bool) -> None:
    assert (cross_site(Headers(headers)) is not None) == cross
