"""The query layer against a real InfluxDB: the InfluxQL proxy (`moby proxy` and `/influx` of `moby
serve`) with the real `influx` CLI and the Python `influxdb` client, "auto" routing, the cache,
refused writes, and the routed readings API (tokens: tests/integration/test_api_access.py)."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from email.message import Message
from typing import Any

import orjson
import pytest
from influxdb import InfluxDBClient  # type: ignore[import-untyped]

from moby.broker.mosquitto import Mosquitto
from moby.procs import free_port
from moby.store.bootstrap import Bootstrap
from moby.store.influx import InfluxClient
from moby.store.influxd import Influxd
from tests import proxy_support
from tests.proxy_support import (
    DAY_MS,
    H1_X,
    HOUR_MS,
    M1_X,
    MINUTE_MS,
    RAW_X,
    Proxy,
    http,
    now_ms,
    seed,
)
from tests.support import Backend, mosquitto_pub_lines, telemetry, wait_until

pytestmark = pytest.mark.integration
seeded, make_proxy = proxy_support.seeded, proxy_support.make_proxy  # fixtures


def plain_queries(db: str) -> list[str]:
    t = now_ms()
    return [
        "SHOW MEASUREMENTS",
        "SHOW RETENTION POLICIES",
        'SHOW TAG VALUES FROM "vibration" WITH KEY = "sensor_id"',
        'SHOW FIELD KEYS FROM "rollup_1m"."vibration"',
        f'SELECT * FROM "raw"."vibration" WHERE time > {t - 120_000}ms ORDER BY time DESC LIMIT 5',
        f'SELECT mean("x"), max("x_max") FROM "{db}"."rollup_1h"."vibration" WHERE time > now() - 3d '
        "GROUP BY time(6h), sensor_id fill(none)",
        'SELECT count("x") FROM "rollup_1m"."vibration"; SELECT last("seq") FROM "raw"."vibration"',
        'SELECT "nothing" FROM "vibration"',
        "SELECT x FROM no_such_measurement",
    ]


def test_the_proxy_answers_http_clients_as_influxdb_does(
    influxd: Influxd, seeded: str, make_proxy: Callable[..., Proxy]
) -> None:
    proxy = make_proxy(influxd, seeded)
    for q in plain_queries(seeded):
        for extra in ({"epoch": "ms"}, {}, {"chunked": "true"}, {"epoch": "s", "pretty": "true"}):
            params = {"db": seeded, "q": q, **extra}
            for method in ("GET", "POST"):
                direct = http(influxd.url, params, method=method)
                proxied = http(proxy.url, params, method=method)
                assert proxied[0] == direct[0], (q, extra)
                assert proxied[2] == direct[2], (q, extra, method)
                assert proxied[1]["X-Influxdb-Version"] == direct[1]["X-Influxdb-Version"]
    # /ping as InfluxDB answers it: 204 and its version header (the influx CLI prints it).
    with urllib.request.urlopen(f"{proxy.url}/ping") as r:
        assert r.status == 204 and r.headers["X-Influxdb-Version"].startswith("1.")


def raw(result: Any) -> Any:
    """A ResultSet's JSON, or the list of them for several statements."""
    return [r.raw for r in result] if isinstance(result, list) else result.raw


def test_the_python_influxdb_client(influxd: Influxd, seeded: str, make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(influxd, seeded)
    direct = InfluxDBClient("127.0.0.1", influxd.port, database=seeded)
    proxied = InfluxDBClient("127.0.0.1", proxy.port, database=seeded)
    assert proxied.ping() == direct.ping()
    for q in plain_queries(seeded)[:-2]:  # the last two raise on both (statement errors)
        for epoch in (None, "ms"):
            assert raw(proxied.query(q, epoch=epoch)) == raw(direct.query(q, epoch=epoch)), q
    assert proxied.get_list_measurements() == direct.get_list_measurements()
    with pytest.raises(Exception, match="read-only"):
        proxied.query("DROP DATABASE x", method="POST")
    with pytest.raises(Exception, match="SHOW DATABASES is not allowed"):
        proxied.get_list_database()  # other databases' names are not the proxy's to tell


def influx_cli(port: int, db: str, q: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["influx", "-host", "127.0.0.1", "-port", str(port), "-database", db, "-execute", q, *extra],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_influx_cli(influxd: Influxd, seeded: str, make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(influxd, seeded)
    for q in plain_queries(seeded):
        for extra in (
            ("-format", "json"),
            ("-format", "csv", "-precision", "rfc3339"),
            ("-format", "column"),
        ):
            direct = influx_cli(influxd.port, seeded, q, *extra)
            proxied = influx_cli(proxy.port, seeded, q, *extra)
            assert (proxied.returncode, proxied.stdout, proxied.stderr) == (
                direct.returncode,
                direct.stdout,
                direct.stderr,
            ), q
    refused = influx_cli(proxy.port, seeded, f'DROP DATABASE "{seeded}"')
    assert refused.returncode != 0 and "read-only" in refused.stderr + refused.stdout
    assert influx_cli(influxd.port, seeded, "SHOW DATABASES", "-format", "csv").stdout.count(seeded) == 1


def auto_query(span_ms: int, interval: str, *, relative: bool = False) -> str:
    t = now_ms()
    where = f"time > now() - {span_ms}ms" if relative else f"time >= {t - span_ms}ms and time <= {t}ms"
    return (
        f'SELECT mean("x") AS "x" FROM "auto"."vibration" WHERE ("sensor_id" = \'s1\') AND {where} '
        f"GROUP BY time({interval}) fill(none)"
    )


@pytest.mark.parametrize(
    ("span_ms", "interval", "policy", "value"),
    [
        (15 * MINUTE_MS, "1s", "raw", RAW_X),
        (2 * DAY_MS, "2m", "rollup_1m", M1_X),
        (90 * DAY_MS, "2h", "rollup_1h", H1_X),
    ],
)
def test_auto_reads_the_policy_that_fits(
    influxd: Influxd,
    seeded: str,
    make_proxy: Callable[..., Proxy],
    span_ms: int,
    interval: str,
    policy: str,
    value: float,
) -> None:
    proxy = make_proxy(influxd, seeded)
    for relative in (False, True):
        q = auto_query(span_ms, interval, relative=relative)
        status, headers, body = http(proxy.url, {"db": seeded, "q": q, "epoch": "ms"})
        assert status == 200, body
        assert headers["X-Moby-Policy"] == policy
        [series] = orjson.loads(body)["results"][0]["series"]
        assert series["columns"] == ["time", "x"]  # the same name at every resolution
        assert {v[1] for v in series["values"]} == {value}
    assert proxy.metric("moby_query_routed_total", f'policy="{policy}"') == 2


def influx_query_requests(url: str) -> int:
    """InfluxDB's own count of /query requests (this request included)."""
    with urllib.request.urlopen(f"{url}/query?q=SHOW+STATS+FOR+%27httpd%27", timeout=10) as r:
        series = orjson.loads(r.read())["results"][0]["series"][0]
    return int(dict(zip(series["columns"], series["values"][0], strict=True))["queryReq"])


def test_a_cache_hit_sends_no_query_to_influxdb(
    own_influxd: Influxd, db_name: str, make_proxy: Callable[..., Proxy]
) -> None:
    asyncio.run(seed(own_influxd.url, db_name))
    proxy = make_proxy(own_influxd, db_name)
    q = auto_query(2 * DAY_MS, "2m")
    first = http(proxy.url, {"db": db_name, "q": q, "epoch": "ms"})
    assert first[1]["X-Moby-Cache"] == "miss"
    before = influx_query_requests(own_influxd.url)
    for _ in range(20):
        again = http(proxy.url, {"db": db_name, "q": q, "epoch": "ms"})
        assert again[1]["X-Moby-Cache"] == "hit" and again[2] == first[2]
    # Grafana's next refresh: the same "last 2 days" with absolute times a second later.
    time.sleep(1.0)
    moved = http(proxy.url, {"db": db_name, "q": auto_query(2 * DAY_MS, "2m"), "epoch": "ms"})
    assert moved[1]["X-Moby-Cache"] == "hit"
    after = influx_query_requests(own_influxd.url)
    assert after - before == 1  # only the second SHOW STATS itself
    # The control: a query not seen before does reach InfluxDB, and the proxy's counter agrees.
    http(proxy.url, {"db": db_name, "q": auto_query(3 * DAY_MS, "5m"), "epoch": "ms"})
    assert influx_query_requests(own_influxd.url) - after == 2
    assert proxy.metric("moby_query_upstream_requests_total") == 2
    assert proxy.metric("moby_query_cache_hits_total") == 21
    # With the cache off, every request is a query.
    off = make_proxy(own_influxd, db_name, moby_proxy_cache="false")
    start = influx_query_requests(own_influxd.url)
    for _ in range(5):
        assert http(off.url, {"db": db_name, "q": q, "epoch": "ms"})[1]["X-Moby-Cache"] == "bypass"
    assert influx_query_requests(own_influxd.url) - start == 6


WRITES = [
    "DROP DATABASE {db}",
    'DROP DATABASE "{db}"',
    "drop measurement vibration",
    'DROP SERIES FROM "vibration"',
    "DELETE FROM vibration WHERE time < now()",
    "CREATE DATABASE evil",
    'CREATE RETENTION POLICY "evil" ON "{db}" DURATION 1h REPLICATION 1',
    'ALTER RETENTION POLICY "raw" ON "{db}" DURATION 1h',
    "CREATE USER evil WITH PASSWORD 'x' WITH ALL PRIVILEGES",
    "GRANT ALL TO evil",
    "REVOKE ALL PRIVILEGES FROM evil",
    "SET PASSWORD FOR evil = 'y'",
    "KILL QUERY 1",
    "CREATE CONTINUOUS QUERY evil ON {db} BEGIN SELECT mean(x) INTO evil FROM m GROUP BY time(1m) END",
    'SELECT * INTO "evil" FROM "vibration"',
    'SELECT mean("x") INTO "{db}"."rollup_1h"."evil" FROM "auto"."vibration" WHERE time > now() - 1h '
    "GROUP BY time(1m)",
    'SELECT * FROM "vibration"; DROP DATABASE "{db}"',
    "SELECT * FROM vibration;DROP MEASUREMENT vibration",
    "SELECT 'x' FROM vibration;\nDROP DATABASE {db}",
    "SELECT x FROM vibration /* ; */ ; DROP DATABASE {db}",
    "SELECT x FROM vibration -- comment\n; DELETE FROM vibration",
    "/* a comment first */ DROP DATABASE {db}",
    'SELECT "x" FROM "vib\\"ration"; DROP DATABASE {db}',  # an escaped quote inside an identifier
    "EXPLAIN ANALYZE SELECT * INTO evil FROM vibration",
    "SHOW USERS",
    # InfluxDB reads "tz / 1" as a division: the rest is not a regex to skip
    'SELECT tz / 1, "x" INTO "{db}"."raw"."evil" FROM /vibration/',
    'SELECT fill / 1 FROM "vibration"; DROP DATABASE "{db}"; SELECT "v" FROM /m/',
    'SELECT not / 1 FROM "vibration"; CREATE DATABASE "evil"; SELECT "v" FROM /m/',
    'SELECT tz / 1 FROM "vibration"; CREATE USER "evil" WITH PASSWORD \'pw\' WITH ALL PRIVILEGES',
]


@pytest.mark.parametrize("template", WRITES)
def test_writes_are_refused(
    influxd: Influxd, seeded: str, make_proxy: Callable[..., Proxy], template: str
) -> None:
    proxy = make_proxy(influxd, seeded)
    q = template.format(db=seeded)
    for method in ("GET", "POST"):
        status, headers, body = http(proxy.url, {"db": seeded, "q": q}, method=method)
        assert status in (400, 403), (q, status, body)
        assert "error" in orjson.loads(body)
        assert headers["Content-Type"] == "application/json"
    # Nothing changed: the database, its measurement and policies are there, nothing new appeared.
    shown = http(
        influxd.url, {"db": seeded, "q": "SHOW MEASUREMENTS; SHOW RETENTION POLICIES; SHOW DATABASES"}
    )
    text = shown[2].decode()
    assert '"vibration"' in text and '"raw","720h0m0s"' in text and f'"{seeded}"' in text
    assert "evil" not in text
    assert proxy.metric("moby_query_upstream_requests_total") == 0


def test_the_write_endpoint_is_refused(
    influxd: Influxd, seeded: str, make_proxy: Callable[..., Proxy]
) -> None:
    proxy = make_proxy(influxd, seeded)
    line = f"vibration,factory_id=f1,sensor_id=evil x=1 {now_ms()}".encode()
    request = urllib.request.Request(f"{proxy.url}/write?db={seeded}&precision=ms", data=line, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403 and "read-only" in orjson.loads(caught.value.read())["error"]
    tags = http(influxd.url, {"db": seeded, "q": 'SHOW TAG VALUES FROM "vibration" WITH KEY = "sensor_id"'})
    assert b"evil" not in tags[2]


# --- moby serve: /influx on the API, the proxy's own port, and the routed readings API ---------------

MakeBackend = Callable[..., Backend]


def test_serve_mounts_the_proxy_and_routes_readings(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend
) -> None:
    factory = f"f{uuid.uuid4().hex[:8]}"
    proxy_port = free_port()
    backend = make_backend(broker, influxd, moby_proxy_port=str(proxy_port))
    t = now_ms()
    payloads = [
        telemetry(i, t - 300_000 + i * 10_000, rms_velocity=RAW_X, temperature=40.0) for i in range(30)
    ]
    mosquitto_pub_lines(broker.port, f"moby/{factory}/s1/telemetry", payloads)
    tags = f"vibration,factory_id={factory},sensor_id=s1"
    m0, h0 = t - t % MINUTE_MS, t - t % HOUR_MS
    rollups = {
        "rollup_1m": [
            f"{tags} rms_velocity={M1_X},rms_velocity_min=1.5,rms_velocity_max=2.5,"
            f"temperature=41.0,temperature_min=40.0,temperature_max=42.0,seq={i}i {m0 - i * MINUTE_MS}"
            for i in range(30, 2 * 1440)
        ],
        "rollup_1h": [
            f"{tags} rms_velocity={H1_X},rms_velocity_min=0.5,rms_velocity_max=8.0,"
            f"temperature=39.0,temperature_min=30.0,temperature_max=45.0,seq={i}i {h0 - i * HOUR_MS}"
            for i in range(2, 91 * 24)
        ],
    }

    async def write() -> None:
        client = InfluxClient(influxd.url, backend.db)
        try:
            for rp, lines in rollups.items():
                await client.write("\n".join(lines).encode(), retention_policy=rp)
        finally:
            await client.close()

    wait_until(lambda: backend.stored() >= 30, 20, what="30 raw points")
    asyncio.run(write())

    def iso(ms: int) -> str:
        return urllib.parse.quote(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + "Z")

    base = f"/api/v1/sensors/s1/readings?factory_id={factory}&fields=rms_velocity,temperature&extremes=true"
    answers = {}
    for span, policy, value in (
        (15 * MINUTE_MS, "raw", RAW_X),
        (2 * DAY_MS, "rollup_1m", M1_X),
        (90 * DAY_MS, "rollup_1h", H1_X),
    ):
        got = backend.get(f"{base}&start={iso(t - span)}&end={iso(t)}&max_points=1000")
        assert (got["resolution"], got["policy"]) == (policy, policy), span
        assert {p["rms_velocity"] for p in got["points"]} == {value}
        answers[policy] = got
    names = ["rms_velocity", "temperature"]
    names += [f"{n}_{agg}" for n in names for agg in ("min", "max")]
    for got in answers.values():
        assert got["fields"] == names
        assert all(set(p) == {"time", *names} for p in got["points"])
    assert answers["raw"]["points"][0]["rms_velocity_max"] == RAW_X
    assert answers["rollup_1h"]["points"][0]["rms_velocity_max"] == 8.0
    assert answers["rollup_1h"]["interval_ms"] == 3 * HOUR_MS  # 90 days in ≤ 1000 points
    assert len(answers["rollup_1h"]["points"]) <= 1000
    # without max_points the range alone decides; a forced resolution is honoured
    assert backend.get(f"{base}&start={iso(t - 2 * DAY_MS)}&end={iso(t)}")["resolution"] == "rollup_1m"
    forced = backend.get(f"{base}&start={iso(t - 15 * MINUTE_MS)}&end={iso(t)}&resolution=rollup_1h")
    assert forced["resolution"] == "rollup_1h"
    schema = backend.get("/openapi.json")
    params = schema["paths"]["/api/v1/sensors/{sensor_id}/readings"]["get"]["parameters"]
    assert {"max_points", "resolution", "extremes"} <= {p["name"] for p in params}

    # the proxy at /influx of the API and on its own port, at InfluxDB's paths
    for url in (f"{backend.api}/influx", f"http://127.0.0.1:{proxy_port}"):
        with urllib.request.urlopen(f"{url}/ping") as r:
            assert r.status == 204 and r.headers["X-Influxdb-Version"]
        status, headers, body = http(
            url, {"db": backend.db, "q": auto_query(90 * DAY_MS, "3h"), "epoch": "ms"}
        )
        assert status == 200 and headers["X-Moby-Policy"] == "rollup_1h", body
    assert backend.metric("moby_query_routed_total", 'policy="rollup_1h"') == 2
    assert influx_cli(proxy_port, backend.db, "SHOW MEASUREMENTS").stdout.count("vibration") == 1


def test_delta_caching_answers_as_influxdb_does(
    influxd: Influxd, db_name: str, make_proxy: Callable[..., Proxy]
) -> None:
    """Held complete buckets plus a tail query equal InfluxDB's own answer, refresh after refresh."""

    async def write(start_ms: int, end_ms: int) -> None:
        client = InfluxClient(influxd.url, db_name)
        try:
            lines = [
                f"vibration,factory_id=f1,sensor_id={s} x={(t // 1000) % 97 + k / 2},seq={t // 1000}i {t}"
                for t in range(start_ms - start_ms % 1000, end_ms, 1000)
                for k, s in enumerate(("s1", "s2"))
            ]
            await client.write("\n".join(lines).encode())
        finally:
            await client.close()

    async def bootstrap() -> None:
        client = InfluxClient(influxd.url, db_name)
        try:
            await Bootstrap(client).run()
        finally:
            await client.close()

    asyncio.run(bootstrap())
    t0 = now_ms()
    asyncio.run(write(t0 - 600_000, t0))
    proxy = make_proxy(influxd, db_name, moby_proxy_cache_recent_ttl_s="0.3")

    def ask(url: str, end: int) -> tuple[Any, Message]:
        first = (end - 300_000) // 10_000 * 10_000  # whole buckets: InfluxDB's answer is comparable
        q = (
            'SELECT mean("x"), max("x"), count("x") FROM "auto"."vibration" WHERE '
            f'time >= {first}ms and time <= {end}ms GROUP BY time(10s), "sensor_id" fill(none)'
        )
        if url == influxd.url:  # InfluxDB itself: the policy the proxy routes to
            q = q.replace('"auto"', '"raw"')
        status, headers, body = http(url, {"db": db_name, "q": q, "epoch": "ms"})
        assert status == 200, body
        return orjson.loads(body), headers

    cached_rows = []
    end = t0
    for _ in range(4):
        got, headers = ask(proxy.url, end)
        want, _ = ask(influxd.url, end)
        assert got == want
        assert len(got["results"][0]["series"]) == 2
        cached_rows.append(int(headers["X-Moby-Delta"].split(",")[0].split("=")[1]))
        # time passes and new readings arrive
        time.sleep(1.5)
        new_end = now_ms()
        asyncio.run(write(end, new_end))
        end = new_end
    assert cached_rows[0] == 0, cached_rows
    assert all(n >= 2 * 20 for n in cached_rows[1:]), cached_rows  # ≥ 20 complete 10-s buckets per sensor
    assert proxy.metric("moby_query_delta_rows_total", 'source="cache"') == sum(cached_rows)
