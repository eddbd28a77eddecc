"""Every endpoint of the real app × every role, in-process (FastAPI's TestClient).

The engine really starts (its queue in a temp dir) against a broker and an InfluxDB that are not
there (closed ports): the endpoints answer as they do while those are down, which is enough to
tell "refused by access control" (401/403/400) from "let through" (the endpoint's own answer).
tests/integration/test_api_access.py does the same against a real backend process.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from moby.access import AccessConfigError
from moby.api.app import create_app
from moby.config import Settings
from moby.procs import free_port
from moby.service import Engine
from moby.tokens import Role, TokenStore
from moby.webguard import DOCS_CSP, STRICT_CSP

BASE = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Endpoint:
    path: str
    role: Role | None  # None: open to anyone
    ok: int  # the endpoint's own answer here (its broker and InfluxDB are down)
    proxy: bool = False


ENDPOINTS = [
    Endpoint("/healthz", None, 200),
    Endpoint("/readyz", None, 503),
    Endpoint("/", None, 200),
    Endpoint("/console/console.js", None, 200),
    Endpoint("/docs", None, 200),
    Endpoint("/docs/swagger-init.js", None, 200),
    Endpoint("/redoc", None, 200),
    Endpoint("/openapi.json", None, 200),
    Endpoint("/metrics", Role.VIEWER, 200),
    Endpoint("/api/v1/sensors", Role.VIEWER, 200),
    Endpoint("/api/v1/sensors/s1", Role.VIEWER, 404),
    Endpoint("/api/v1/sensors/s1/readings", Role.VIEWER, 404),
    Endpoint("/api/v1/latest", Role.VIEWER, 200),  # no sensors yet: no query to make
    Endpoint("/api/v1/gateways", Role.VIEWER, 200),
    Endpoint("/api/v1/dlq", Role.ADMIN, 200),
    Endpoint("/influx/ping", None, 502, proxy=True),  # open, as InfluxDB's /ping is
    Endpoint("/influx/query?db=moby&q=SHOW+MEASUREMENTS", Role.VIEWER, 502, proxy=True),
    Endpoint("/influx/write?db=moby", Role.VIEWER, 403, proxy=True),  # then: read-only
]
# the API documentation is public, like the OpenAPI document it shows
OPEN_API_ROUTES = {"/healthz", "/readyz", "/", "/docs", "/docs/swagger-init.js", "/redoc"}


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        influx_url=f"http://127.0.0.1:{free_port()}",
        internal_metrics_interval_s=0,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    store = TokenStore(tmp_path / "data" / "api-tokens.json")
    made = {role.label: store.create(role, role.label)[1] for role in Role}
    record, made["revoked"] = store.create(Role.ADMIN, "gone")
    store.revoke(record.id)
    return made


@pytest.fixture
def required(tmp_path: Path, tokens: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(Engine(settings(tmp_path, api_auth="required"))), base_url=BASE) as client:
        yield client


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Engine(settings(tmp_path))), base_url=BASE) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.path.split("?")[0])
def test_every_endpoint_for_every_role(
    required: TestClient, tokens: dict[str, str], endpoint: Endpoint
) -> None:
    anonymous = required.get(endpoint.path)
    if endpoint.role is None:
        assert anonymous.status_code == endpoint.ok, anonymous.text
        return
    assert anonymous.status_code == 401
    challenge = anonymous.headers["www-authenticate"]
    assert "Bearer" in challenge and ("Basic" in challenge) == endpoint.proxy
    key = "error" if endpoint.proxy else "detail"
    assert "moby token create" in anonymous.json()[key]
    for who in ("revoked", "moby_0123456789abcdef_" + "A" * 43, "garbage"):
        refused = required.get(endpoint.path, headers=bearer(tokens.get(who, who)))
        assert refused.status_code == 401, who
        assert "invalid_token" in refused.headers["www-authenticate"] or endpoint.proxy
    for role in Role:
        answer = required.get(endpoint.path, headers=bearer(tokens[role.label]))
        if role >= endpoint.role:
            assert answer.status_code == endpoint.ok, (role, answer.text)
        else:
            assert answer.status_code == 403, role
            assert f"role {role.label}" in answer.json()["detail"]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.path.split("?")[0])
def test_on_loopback_the_api_is_open_by_default(loopback: TestClient, endpoint: Endpoint) -> None:
    answer = loopback.get(endpoint.path)
    assert answer.status_code == endpoint.ok, answer.text
    # Credentials are not looked at when tokens are not required (as InfluxDB without auth).
    assert loopback.get(endpoint.path, headers=bearer("garbage")).status_code == endpoint.ok


def test_every_api_route_names_its_role(tmp_path: Path) -> None:
    """A new endpoint without `dependencies=[guard.<role>]` fails here, not in production."""
    app = create_app(Engine(settings(tmp_path)))
    for route in app.routes:
        if isinstance(route, APIRoute):
            roles = [d.dependency.__name__ for d in route.dependencies]
            assert roles or route.path in OPEN_API_ROUTES, f"{route.path} is open: give it a role"
        elif isinstance(route, Mount) and route.path != "/influx":  # the proxy checks its own
            assert isinstance(route.app, StaticFiles), f"{route.path}: only files may be mounted open"
    # ... and the matrix above covers every one of them.
    paths = {e.path.split("?")[0] for e in ENDPOINTS}
    for route in app.routes:
        if isinstance(route, APIRoute):
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", route.path)
            assert any(re.fullmatch(pattern, p) for p in paths), f"{route.path} is missing from ENDPOINTS"


def test_the_proxy_takes_the_token_as_grafana_sends_it(required: TestClient, tokens: dict[str, str]) -> None:
    query = "/influx/query?db=moby&q=SHOW+MEASUREMENTS"
    viewer = tokens["viewer"]
    basic = "Basic " + base64.b64encode(f"grafana:{viewer}".encode()).decode()
    assert required.get(query, headers={"Authorization": basic}).status_code == 502  # let through
    assert required.get(f"{query}&u=grafana&p={viewer}").status_code == 502
    assert (
        required.post("/influx/query", data={"db": "moby", "q": "SHOW MEASUREMENTS", "p": viewer}).status_code
        == 502
    )
    wrong = "Basic " + base64.b64encode(b"grafana:nope").decode()
    refused = required.get(query, headers={"Authorization": wrong})
    assert refused.status_code == 401 and refused.json()["error"].startswith("authorization failed")


def test_openapi_declares_the_bearer_scheme(loopback: TestClient) -> None:
    spec = loopback.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["API token"]["scheme"] == "bearer"
    assert spec["paths"]["/api/v1/dlq"]["get"]["security"] == [{"API token": []}]


# --- Host and cross-site --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/api/v1/sensors", "/influx/query?q=SHOW+DATABASES", "/docs"])
def test_a_foreign_host_header_is_refused(loopback: TestClient, path: str) -> None:
    answer = loopback.get(path, headers={"Host": "evil.example"})
    assert answer.status_code == 400
    assert "MOBY_API_ALLOWED_HOSTS" in answer.text
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_probes_answer_whatever_the_host(loopback: TestClient) -> None:
    assert loopback.get("/healthz", headers={"Host": "backend-7.pods.cluster"}).status_code == 200


def test_allowed_hosts_are_configurable(tmp_path: Path) -> None:
    app = create_app(Engine(settings(tmp_path, api_allowed_hosts="moby.example.com")))
    with TestClient(app, base_url="http://moby.example.com") as client:
        assert client.get("/api/v1/sensors").status_code == 200
        assert client.get("/api/v1/sensors", headers={"Host": "evil.example"}).status_code == 400
    with pytest.raises(AccessConfigError, match="MOBY_API_ALLOWED_HOSTS"):
        create_app(Engine(settings(tmp_path, api_allowed_hosts="moby.example.com:8000")))


CROSS = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
NAVIGATE = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


def test_cross_site_requests_are_refused_even_without_tokens(loopback: TestClient) -> None:
    q = "/influx/query?db=moby&q=SHOW+DATABASES"
    for headers in (CROSS, NAVIGATE, {"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "same-site"}):
        answer = loopback.get(q, headers=headers)
        assert answer.status_code == 403, headers
        assert "cross-site request refused" in answer.json()["error"]  # InfluxDB's error shape
    refused = loopback.get("/api/v1/sensors", headers={**CROSS, "Sec-Fetch-Mode": "cors"})
    assert refused.status_code == 403 and "cross-site" in refused.json()["detail"]
    assert loopback.post("/influx/query", data={"q": "SHOW DATABASES"}, headers=NAVIGATE).status_code == 403
    # Following a link from another site to the console or the API is a navigation: allowed.
    assert loopback.get("/", headers=NAVIGATE).status_code == 200
    assert loopback.get("/api/v1/sensors", headers=NAVIGATE).status_code == 200
    # The console's own requests.
    same = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    assert loopback.get("/api/v1/sensors", headers=same).status_code == 200
    assert loopback.get("/api/v1/sensors", headers={"Origin": BASE}).status_code == 200


# --- security headers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "csp"),
    [
        ("/", STRICT_CSP),
        ("/console/console.js", STRICT_CSP),
        ("/console/console.css", STRICT_CSP),
        ("/api/v1/sensors", STRICT_CSP),
        ("/nowhere", STRICT_CSP),
        ("/influx/ping", STRICT_CSP),
        ("/docs", DOCS_CSP),
        ("/redoc", DOCS_CSP),
    ],
)
def test_security_headers_on_every_answer(required: TestClient, path: str, csp: str) -> None:
    answer = required.get(path)
    assert answer.headers["content-security-policy"] == csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cross-origin-resource-policy"] == "same-origin"
    assert "frame-ancestors 'none'" in csp and "http" not in csp  # nothing from another origin


def test_the_console_has_no_inline_script_or_style() -> None:
    """What the strict CSP would block (the browser test checks that nothing is blocked)."""
    static = Path(__file__).resolve().parents[2] / "src" / "moby" / "api" / "static"
    html = (static / "index.html").read_text()
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert "<script src=" in html and not re.search(r"\son[a-z]+\s*=", html)  # no onclick= etc.
    js = (static / "console.js").read_text()
    for blocked in (".innerHTML", "eval(", "new Function", 'setTimeout("', '"style"'):
        assert blocked not in js, blocked


# --- start-up ---------------------------------------------------------------------------------------------
def test_listening_beyond_loopback_is_said_loudly_and_requires_tokens(tmp_path: Path) -> None:
    app = create_app(Engine(settings(tmp_path, api_host="0.0.0.0")))
    with structlog.testing.capture_logs() as logs, TestClient(app, base_url=BASE) as client:
        assert client.get("/api/v1/sensors").status_code == 401
        assert client.get("/healthz").status_code == 200
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert any("beyond loopback (0.0.0.0)" in w for w in warnings), warnings
    assert any("none exist yet" in w and "moby token create" in w for w in warnings), warnings


def test_off_beyond_loopback_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AccessConfigError, match="MOBY_API_AUTH=off"):
        create_app(Engine(settings(tmp_path, api_host="0.0.0.0", api_auth="off")))
    proxy_wide = settings(tmp_path, api_auth="off", proxy_port=free_port(), proxy_host="0.0.0.0")
    with pytest.raises(AccessConfigError, match="MOBY_API_AUTH=off"):
        create_app(Engine(proxy_wide))


@pytest.mark.parametrize(
    ("command", "env", "says"),
    [
        ("serve", {"MOBY_API_HOST": "0.0.0.0", "MOBY_API_AUTH": "off"}, "MOBY_API_AUTH=off is refused"),
        ("proxy", {"MOBY_PROXY_HOST": "0.0.0.0", "MOBY_API_AUTH": "off"}, "MOBY_API_AUTH=off is refused"),
        ("serve", {"MOBY_PROXY_USERNAME": "grafana", "MOBY_PROXY_PASSWORD": "x"}, "MOBY_PROXY_USERNAME"),
        ("proxy", {"MOBY_API_ALLOWED_HOSTS": "a b/c"}, "MOBY_API_ALLOWED_HOSTS"),
    ],
)
def test_the_commands_refuse_to_start_with_one_line(
    tmp_path: Path, env: dict[str, str], says: str, command: str
) -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "moby", command],
        env={
            "PATH": "/usr/bin:/bin",
            "MOBY_DATA_DIR": str(tmp_path),
            "MOBY_API_PORT": str(port),
            "MOBY_PROXY_PORT": str(port),
            "MOBY_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
            "MOBY_INFLUX_URL": f"http://127.0.0.1:{free_port()}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
