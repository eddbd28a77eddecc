"""Who may use the HTTP API and the InfluxQL proxy, against a real `moby serve` / `moby proxy`,
a real Mosquitto and a real InfluxDB; tokens made by the real `moby token` command.

Reproductions kept as regression tests: a page on another site (or a rebound DNS name) sending
statements to `/influx/query` of an open loopback backend; dead letters, sensors, readings,
metrics and the proxy answered without credentials; no word when the API listens beyond loopback.
This file imports no access-control module, so on code without it the tests fail by assertion.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path

import pytest
from influxdb import InfluxDBClient  # type: ignore[import-untyped]

from moby.broker.mosquitto import Mosquitto
from moby.procs import ManagedProcess, free_port, port_open
from moby.store.influxd import Influxd
from tests.support import Backend, end_session, influx_query, mosquitto_pub_lines, telemetry, wait_until

pytestmark = pytest.mark.integration

MakeBackend = Callable[..., Backend]


def http(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    form: dict[str, str] | None = None,
) -> tuple[int, Message, bytes]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def token_command(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moby", "token", *args],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MOBY_")},
            "MOBY_DATA_DIR": str(data_dir),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_token(data_dir: Path, role: str) -> str:
    done = token_command(data_dir, "create", "--role", role, "--name", f"test-{role}")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"grafana:{token}".encode()).decode()}


@pytest.fixture
def factory() -> str:
    return f"acc{uuid.uuid4().hex[:8]}"


def seed_one_sensor(broker: Mosquitto, factory: str) -> None:
    now = int(time.time() * 1000)
    mosquitto_pub_lines(
        broker.port, f"moby/{factory}/s1/telemetry", [telemetry(i, now - 60_000 + i * 1000) for i in range(5)]
    )
    mosquitto_pub_lines(broker.port, f"moby/{factory}/s1/telemetry", [b"{not json"])


# --- every endpoint × role, on a real backend -------------------------------------------------------------


def test_every_endpoint_for_every_role(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str, tmp_path: Path
) -> None:
    backend = make_backend(broker, influxd, moby_api_auth="required")
    data_dir = tmp_path / "backend"  # make_backend's MOBY_DATA_DIR
    # Made while the backend runs: it reads the token file again when it changes.
    tokens = {role: create_token(data_dir, role) for role in ("viewer", "operator", "admin")}
    seed_one_sensor(broker, factory)
    wait_until(lambda: backend.stored() >= 5, 20, what="5 points")
    wait_until(
        lambda: http(f"{backend.api}/api/v1/dlq", headers=bearer(tokens["admin"]))[2].count(b"not json") > 0,
        10,
        what="the dead letter",
    )
    q = urllib.parse.urlencode({"db": backend.db, "q": 'SELECT count("seq") FROM "raw"."vibration"'})
    matrix = {  # path: least role (None: open)
        "/healthz": None,
        "/readyz": None,
        "/": None,
        "/console/console.js": None,
        "/metrics": "viewer",
        "/api/v1/sensors": "viewer",
        f"/api/v1/sensors/s1?factory_id={factory}": "viewer",
        f"/api/v1/sensors/s1/readings?factory_id={factory}": "viewer",
        f"/influx/query?{q}": "viewer",
        "/api/v1/dlq": "admin",
    }
    order = ["viewer", "operator", "admin"]
    for path, least in matrix.items():
        url = backend.api + path
        status, headers, body = http(url)
        if least is None:
            assert status == 200, (path, body)
            continue
        assert status == 401, (path, status, body)  # the reproduction: these answered 200
        assert "Bearer" in headers["WWW-Authenticate"], path
        assert http(url, headers=bearer("moby_0123456789abcdef_" + "A" * 43))[0] == 401
        for role in order:
            status, _, body = http(url, headers=bearer(tokens[role]))
            expected = 200 if order.index(role) >= order.index(least) else 403
            assert status == expected, (path, role, status, body)
    readings = json.loads(
        http(
            f"{backend.api}/api/v1/sensors/s1/readings?factory_id={factory}", headers=bearer(tokens["viewer"])
        )[2]
    )
    assert len(readings["points"]) == 5
    assert b"not json" in http(f"{backend.api}/api/v1/dlq", headers=bearer(tokens["admin"]))[2]

    # The proxy takes the token as Grafana and InfluxDB clients send credentials.
    viewer = tokens["viewer"]
    proxy_q = f"{backend.api}/influx/query?{q}"
    for given in (basic(viewer), {"Authorization": f"Token grafana:{viewer}"}):
        status, _, body = http(proxy_q, headers=given)
        assert status == 200 and b'"count"' in body, body
    assert http(f"{proxy_q}&u=grafana&p={viewer}")[0] == 200
    form = {"db": backend.db, "q": "SHOW MEASUREMENTS", "u": "grafana", "p": viewer}
    assert http(f"{backend.api}/influx/query", method="POST", form=form)[0] == 200
    status, _, body = http(proxy_q)
    assert status == 401 and json.loads(body)["error"].startswith(
        "unable to parse authentication credentials"
    )
    assert http(proxy_q, headers=basic("nope"))[0] == 401

    # Revoked: refused from the next request on, without a restart.
    token_id = viewer.split("_")[1]
    assert token_command(data_dir, "revoke", token_id).returncode == 0
    assert http(f"{backend.api}/api/v1/sensors", headers=bearer(viewer))[0] == 401
    assert http(proxy_q, headers=basic(viewer))[0] == 401
    assert http(f"{backend.api}/api/v1/sensors", headers=bearer(tokens["operator"]))[0] == 200


# --- the standalone proxy, with the influx CLI and the Python client ---------------------------------------


class Proxy(ManagedProcess):
    def __init__(self, directory: Path, influxd: Influxd, db: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            "moby proxy",
            [sys.executable, "-m", "moby", "proxy"],
            log_path=directory / f"proxy-{self.port}.log",
            ready=lambda: port_open(self.port),
            env={
                "MOBY_INFLUX_URL": influxd.url,
                "MOBY_INFLUX_DB": db,
                "MOBY_PROXY_PORT": str(self.port),
                "MOBY_DATA_DIR": str(directory),
                **env,
            },
        )


@pytest.fixture
def proxy(influxd: Influxd, db_name: str, tmp_path: Path) -> Iterator[Proxy]:
    http(f"{influxd.url}/query", method="POST", form={"q": f'CREATE DATABASE "{db_name}"'})
    request = urllib.request.Request(
        f"{influxd.url}/write?db={db_name}", data=b"vibration,sensor_id=s1 x=1", method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()
    p = Proxy(tmp_path, influxd, db_name, MOBY_API_AUTH="required")
    p.start()
    yield p
    p.stop()
    http(f"{influxd.url}/query", method="POST", form={"q": f'DROP DATABASE "{db_name}"'})


def influx_cli(port: int, db: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "influx",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-database",
            db,
            "-execute",
            "SHOW MEASUREMENTS",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_proxy_alone_takes_tokens_from_influxdb_clients(
    proxy: Proxy, db_name: str, tmp_path: Path
) -> None:
    viewer = create_token(tmp_path, "viewer")
    ok = influx_cli(proxy.port, db_name, "-username", "grafana", "-password", viewer)
    assert ok.returncode == 0 and "vibration" in ok.stdout, ok.stdout + ok.stderr
    denied = influx_cli(proxy.port, db_name, "-username", "grafana", "-password", "wrong")
    assert denied.returncode != 0 and "authorization failed" in denied.stdout + denied.stderr
    missing = influx_cli(proxy.port, db_name)
    assert (
        missing.returncode != 0
        and "unable to parse authentication credentials" in missing.stdout + missing.stderr
    )
    client = InfluxDBClient("127.0.0.1", proxy.port, "grafana", viewer, db_name)
    assert {"name": "vibration"} in client.get_list_measurements()
    # Its /metrics takes a token too; /ping stays open, as InfluxDB's does.
    assert http(f"{proxy.url}/metrics")[0] == 401
    assert http(f"{proxy.url}/metrics", headers=bearer(viewer))[0] == 200
    assert http(f"{proxy.url}/ping")[0] == 204
    assert http(f"{proxy.url}/query?q=SHOW+DATABASES", headers={"Host": "evil.example"})[0] == 400


# --- cross-site reproductions on an open loopback backend ---------------------------------------------------

ATTACK = 'SELECT tz / 1 FROM "m"; CREATE DATABASE "{db}"; SELECT "v" FROM /m/'
IMG = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
LINK = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


def test_a_page_on_another_site_cannot_use_the_proxy(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend
) -> None:
    backend = make_backend(broker, influxd)  # loopback, no tokens: the default
    attempts = [  # headers, status of the proxy, status of /api/v1/sensors
        ({"Host": "evil.example"}, 400, 400),  # DNS rebinding: the page's name, resolved to 127.0.0.1
        (IMG, 403, 403),  # <img src="http://127.0.0.1:8000/influx/query?q=...">
        (LINK, 403, 200),  # a link: following it to the API is harmless, to the proxy it runs a query
        ({"Origin": "http://evil.example"}, 403, 403),  # fetch() from a browser without Sec-Fetch-*
        ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}, 403, 403),  # another app on localhost
    ]
    for headers, proxy_status, api_status in attempts:
        victim = f"pwn_{uuid.uuid4().hex[:8]}"
        q = urllib.parse.urlencode({"db": backend.db, "q": ATTACK.format(db=victim)})
        status, _, body = http(f"{backend.api}/influx/query?{q}", headers=headers)
        assert status == proxy_status, (headers, status, body)
        assert json.loads(body)["error"]  # InfluxDB's error shape, which Grafana shows
        assert http(f"{backend.api}/api/v1/sensors", headers=headers)[0] == api_status, headers
        form = {"db": backend.db, "q": ATTACK.format(db=victim)}
        assert (
            http(f"{backend.api}/influx/query", method="POST", form=form, headers=headers)[0] == proxy_status
        )
        assert victim not in json.dumps(influx_query(influxd.url, "SHOW DATABASES"))
    # The console's own page, and programs (no browser headers), are answered.
    same = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    assert http(f"{backend.api}/influx/query?db={backend.db}&q=SHOW+MEASUREMENTS", headers=same)[0] == 200
    assert http(f"{backend.api}/influx/query?db={backend.db}&q=SHOW+MEASUREMENTS")[0] == 200


def test_every_answer_carries_the_security_headers(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend
) -> None:
    backend = make_backend(broker, influxd)
    for path in ("/", "/console/console.js", "/api/v1/sensors", "/influx/ping", "/nowhere", "/docs"):
        _, headers, _ = http(backend.api + path)
        csp = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src" in csp, path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Referrer-Policy"] == "no-referrer", path


# --- beyond loopback, for real ------------------------------------------------------------------------------


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the test binds to it)."""
    try:
        done = subprocess.run(
            ["ip", "-j", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True, timeout=10
        )
        for link in json.loads(done.stdout or "[]"):
            for info in link.get("addr_info", []):
                if info.get("family") == "inet" and info.get("local"):
                    return str(info["local"])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return None


@pytest.fixture
def wide_backend(broker: Mosquitto, influxd: Influxd, db_name: str, tmp_path: Path) -> Iterator[Backend]:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    client_id = f"moby-test-{uuid.uuid4().hex[:8]}"
    backend = Backend(
        data_dir=tmp_path / "wide",
        mqtt_url=broker.url,
        influx_url=influxd.url,
        db=db_name,
        client_id=client_id,
        extra_env={"MOBY_API_HOST": address},  # and MOBY_API_AUTH left at its default
    )
    backend.api = f"http://{address}:{backend.api_port}"
    backend.start()
    try:
        yield backend
    finally:
        backend.stop()
        asyncio.run(end_session("127.0.0.1", broker.port, client_id))


def test_beyond_loopback_tokens_are_required_and_it_says_so(wide_backend: Backend, tmp_path: Path) -> None:
    api = wide_backend.api
    log = wide_backend.log_path.read_text()
    warnings = [line for line in log.splitlines() if "beyond loopback" in line]
    assert len(warnings) == 1 and "warning" in warnings[0], log
    assert "none exist yet" in log and "moby token create" in log
    assert http(f"{api}/healthz")[0] == 200 and http(f"{api}/readyz")[0] == 200
    for path in ("/api/v1/sensors", "/api/v1/dlq", "/metrics", "/influx/query?q=SHOW+DATABASES"):
        assert http(api + path)[0] == 401, path
    viewer = create_token(tmp_path / "wide", "viewer")
    assert http(f"{api}/api/v1/sensors", headers=bearer(viewer))[0] == 200
    assert http(f"{api}/api/v1/dlq", headers=bearer(viewer))[0] == 403
    assert http(f"{api}/api/v1/sensors", headers={**bearer(viewer), "Host": "evil.example"})[0] == 400
