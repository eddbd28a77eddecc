"""The query proxy under attack, against a real InfluxDB: the security issue's reproductions.

* the read-only proxy made to write, drop and create users (through `/influx/query` of a real
  `moby serve`, plain GET, no credentials, as the attack was made): refused, nothing changed;
* its cache poisoned by a parameter given in the URL and again in the body: refused;
* databases, SHOW statements, answer size, query time and concurrency per client: bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from moby.broker.mosquitto import Mosquitto
from moby.store.bootstrap import Bootstrap
from moby.store.influx import InfluxClient
from moby.store.influxd import Influxd
from tests import proxy_support
from tests.proxy_support import Proxy, http, now_ms
from tests.support import Backend, influx_query, wait_until

pytestmark = pytest.mark.integration
seeded, make_proxy = proxy_support.seeded, proxy_support.make_proxy  # fixtures

MakeBackend = Callable[..., Backend]


def post(url: str, q: str, db: str = "") -> Any:
    """A statement straight to InfluxDB, its answer read (unread, InfluxDB may abort it)."""
    data = urllib.parse.urlencode({"q": q, "db": db}).encode()
    with urllib.request.urlopen(f"{url}/query", data=data, timeout=30) as r:
        answer = orjson.loads(r.read())
    assert all("error" not in res for res in answer["results"]), answer
    return answer


def write(url: str, db: str, lines: str, rp: str = "") -> None:
    target = f"{url}/write?db={db}&precision=ms" + (f"&rp={rp}" if rp else "")
    with urllib.request.urlopen(target, data=lines.encode(), timeout=30):
        pass


def state(url: str, dbs: list[str]) -> dict[str, Any]:
    """What a write, a drop, a schema or a user change alters (raw only: the backend's continuous
    queries keep writing the rollups)."""
    out: dict[str, Any] = {
        q: influx_query(url, q) for q in ("SHOW DATABASES", "SHOW USERS", "SHOW CONTINUOUS QUERIES")
    }
    for db in dbs:
        out[db] = influx_query(
            url,
            'SHOW RETENTION POLICIES; SHOW MEASUREMENTS; SHOW SERIES; SELECT * FROM "raw"./.*/; '
            'SELECT * FROM "autogen"./.*/',
            db,
        )
    return out


def test_the_reproductions_change_nothing_through_serve(
    broker: Mosquitto, influxd: Influxd, db_name: str, make_backend: MakeBackend
) -> None:
    """The six queries of the report, as sent: plain GETs to /influx/query without credentials."""
    victim, other = f"{db_name}_victim", f"{db_name}_other"
    t = now_ms()

    async def prepare() -> None:
        client = InfluxClient(influxd.url, db_name)
        try:
            await Bootstrap(client).run()
        finally:
            await client.close()

    asyncio.run(prepare())
    write(influxd.url, db_name, f"vibration,factory_id=f,sensor_id=marker x=1,seq=1i {t - 60_000}", "raw")
    write(influxd.url, db_name, f"m v=1,seq=1i {t - 60_000}", "raw")
    for db in (victim, other):
        post(influxd.url, f'CREATE DATABASE "{db}"')
        write(influxd.url, db, f"m v=1 {t - 60_000}")
    backend = make_backend(broker, influxd, moby_internal_metrics_interval_s="0")
    # The backend re-creates its rollup queries once at start: let it finish before comparing.
    wait_until(lambda: "InfluxDB bootstrapped" in backend.log_path.read_text(), 30, what="bootstrap")
    dbs = [db_name, victim, other]
    before = state(influxd.url, dbs)
    reproductions = [
        f'SELECT tz / 1, "x" INTO "{other}"."autogen"."injected" FROM /vibration/',
        f'SELECT fill / 1 FROM "m"; DROP DATABASE "{victim}"; SELECT "v" FROM /m/',
        'SELECT not / 1 FROM "m"; CREATE DATABASE "pwn"; SELECT "v" FROM /m/',
        'SELECT tz / 1 FROM "m"; CREATE USER "evil" WITH PASSWORD \'pw\' WITH ALL PRIVILEGES; '
        'SELECT "v" FROM /m/',
        'SELECT tz / 1 FROM "m"; DELETE FROM "m"; SELECT "v" FROM /m/',
        f'SELECT tz / 1, "x" * 0 + 666 AS "x" INTO "{db_name}"."raw"."vibration" FROM '
        f'"{db_name}"."raw"."vibration" WHERE "sensor_id"::tag = \'marker\' GROUP BY * ; '
        'SELECT "v" FROM /m/',
    ]
    for q in reproductions:
        params = urllib.parse.urlencode({"q": q, "db": db_name})
        status, body = _get(f"{backend.api}/influx/query?{params}")
        assert status == 403, (q, status, body)
        assert "read-only" in orjson.loads(body)["error"]
    assert state(influxd.url, dbs) == before
    marker = influx_query(
        influxd.url, 'SELECT "x" FROM "raw"."vibration" WHERE "sensor_id" = \'marker\'', db_name
    )
    assert marker[0]["series"][0]["values"][0][1] == 1
    assert backend.metric("moby_query_upstream_requests_total") == 0


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str, query: dict[str, str], body: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{url}/query?{urllib.parse.urlencode(query)}",
        data=urllib.parse.urlencode(body).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --- cache poisoning --------------------------------------------------------------------------------


def test_a_parameter_given_twice_is_refused(
    influxd: Influxd, seeded: str, make_proxy: Callable[..., Proxy]
) -> None:
    proxy = make_proxy(influxd, seeded)
    q = 'SELECT "x" FROM "raw"."vibration" WHERE time > now() - 1h ORDER BY time DESC LIMIT 3'
    # 1. The URL says epoch=s, the body epoch=ms: an answer in seconds was cached under the
    #    milliseconds key and served to every later Grafana request.
    status, body = _post(proxy.url, {"db": seeded, "epoch": "s", "q": q}, {"epoch": "ms"})
    assert status == 400 and b'parameter \\"epoch\\" is given more than once' in body, body
    # 2. Another database in the URL than in the body: one database's values under the other's key.
    status, body = _post(proxy.url, {"db": "other", "q": q}, {"db": seeded})
    assert status == 400 and b"more than once" in body, body
    # 3. Twice in the URL, twice in the body.
    status, _ = _get(f"{proxy.url}/query?db={seeded}&q=SHOW+MEASUREMENTS&q=SHOW+TAG+KEYS")
    assert status == 400
    body_twice = f"db={seeded}&epoch=s&epoch=ms&q={urllib.parse.quote(q)}"
    request = urllib.request.Request(
        f"{proxy.url}/query",
        data=body_twice.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert proxy.metric("moby_query_upstream_requests_total") == 0
    # Every answer is keyed by what was forwarded: ms asked, ms answered, as InfluxDB does.
    for epoch in ("s", "ms"):
        direct = http(influxd.url, {"db": seeded, "q": q, "epoch": epoch})[2]
        assert http(proxy.url, {"db": seeded, "q": q, "epoch": epoch})[2] == direct
        assert http(proxy.url, {"db": seeded, "q": q, "epoch": epoch}, method="POST")[2] == direct
    # A body that is not a form is refused, not ignored.
    request = urllib.request.Request(
        f"{proxy.url}/query?db={seeded}&q=SHOW+MEASUREMENTS",
        data=b'{"q": "DROP DATABASE x"}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400


# --- bounds -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q",
    [
        "SHOW DIAGNOSTICS",
        "SHOW STATS",
        "SHOW QUERIES",
        "SHOW SHARDS",
        "SHOW SHARD GROUPS",
        "SHOW USERS",
        "SHOW GRANTS FOR x",
        "SHOW DATABASES",
        "SHOW SERIES",
        "SHOW SUBSCRIPTIONS",
        "SHOW CONTINUOUS QUERIES",
        'SELECT * FROM "_internal".."httpd"',
        'SELECT * FROM "_internal"."monitor"./.*/',
        'SELECT * FROM "otherdb"."autogen"."m"',
        'SELECT * FROM (SELECT * FROM "_internal".."httpd")',
        'SELECT "x" FROM "raw"."vibration"; SELECT * FROM "_internal".."runtime"',
        "SHOW MEASUREMENTS ON _internal",
        'SHOW FIELD KEYS FROM "_internal".."httpd"',
        "SHOW RETENTION POLICIES ON _internal",
        'SHOW TAG VALUES ON "_internal" WITH KEY = "hostname"',
    ],
)
def test_other_databases_and_admin_statements_are_refused(
    influxd: Influxd, seeded: str, make_proxy: Callable[..., Proxy], q: str
) -> None:
    proxy = make_proxy(influxd, seeded)
    for params in ({"db": seeded, "q": q}, {"q": q}):
        status, _, body = http(proxy.url, params)
        assert status == 403, (q, body)
    status, _, body = http(proxy.url, {"db": "_internal", "q": "SHOW MEASUREMENTS"})
    assert status == 403 and b'database \\"_internal\\" is not served' in body
    assert proxy.metric("moby_query_upstream_requests_total") == 0


def test_the_dashboards_show_statements_are_served(
    influxd: Influxd, seeded: str, make_proxy: Callable[..., Proxy]
) -> None:
    proxy = make_proxy(influxd, seeded)
    for q in (
        "SHOW MEASUREMENTS",
        "SHOW MEASUREMENTS WITH MEASUREMENT =~ /vib/ LIMIT 100",
        'SHOW TAG VALUES WITH KEY = "sensor_id"',
        'SHOW TAG VALUES FROM "vibration" WITH KEY = "sensor_id" WHERE "factory_id" =~ /^f1$/',
        'SHOW TAG KEYS FROM "vibration"',
        'SHOW FIELD KEYS FROM "raw"."vibration"',
        f'SHOW RETENTION POLICIES ON "{seeded}"',
    ):
        direct = http(influxd.url, {"db": seeded, "q": q})
        proxied = http(proxy.url, {"db": seeded, "q": q})
        assert (proxied[0], proxied[2]) == (direct[0], direct[2]), q
        assert b"series" in direct[2], q


def test_an_answer_past_the_size_limit_is_refused(
    influxd: Influxd, seeded: str, make_proxy: Callable[..., Proxy]
) -> None:
    proxy = make_proxy(influxd, seeded, moby_proxy_max_response_bytes="4096")
    everything = 'SELECT * FROM "rollup_1m"./.*/'
    assert len(http(influxd.url, {"db": seeded, "q": everything})[2]) > 100_000
    for extra in ({}, {"chunked": "true"}, {"epoch": "ns"}):
        status, _, body = http(proxy.url, {"db": seeded, "q": everything, **extra})
        assert status == 422, (extra, body[:200])
        assert "larger than the proxy's limit of 4096 bytes" in orjson.loads(body)["error"]
    small = 'SELECT * FROM "rollup_1m"./.*/ LIMIT 3'
    assert http(proxy.url, {"db": seeded, "q": small})[2] == http(influxd.url, {"db": seeded, "q": small})[2]
    assert proxy.metric("moby_query_requests_total", 'outcome="too_large"') == 3


@pytest.fixture
def frozen(own_influxd: Influxd) -> Iterator[Callable[[bool], None]]:
    """freeze(True) stops the InfluxDB process (SIGSTOP): it accepts connections, answers nothing."""
    assert own_influxd.proc is not None
    pid = own_influxd.proc.pid

    def freeze(on: bool) -> None:
        os.kill(pid, signal.SIGSTOP if on else signal.SIGCONT)

    yield freeze
    os.kill(pid, signal.SIGCONT)


def test_a_query_past_the_time_limit_is_cut(
    own_influxd: Influxd, db_name: str, make_proxy: Callable[..., Proxy], frozen: Callable[[bool], None]
) -> None:
    asyncio.run(proxy_support.seed(own_influxd.url, db_name))
    proxy = make_proxy(own_influxd, db_name, moby_proxy_timeout_s="1")
    frozen(True)
    started = time.monotonic()
    status, _, body = http(proxy.url, {"db": db_name, "q": 'SELECT last("x") FROM "raw"."vibration"'})
    took = time.monotonic() - started
    frozen(False)
    assert status == 504, body
    assert "longer than the proxy's limit of 1 s" in orjson.loads(body)["error"]
    assert took < 10, took
    assert http(proxy.url, {"db": db_name, "q": 'SELECT last("x") FROM "raw"."vibration"'})[0] == 200


def test_concurrent_queries_per_client_are_bounded(
    own_influxd: Influxd, db_name: str, make_proxy: Callable[..., Proxy], frozen: Callable[[bool], None]
) -> None:
    asyncio.run(proxy_support.seed(own_influxd.url, db_name))
    proxy = make_proxy(
        own_influxd, db_name, moby_proxy_max_concurrent_per_client="1", moby_proxy_max_waiting_per_client="8"
    )
    frozen(True)
    answers: list[int] = []

    def ask(n: int) -> None:  # distinct queries: identical ones would share one upstream request
        q = f'SELECT "x" FROM "raw"."vibration" LIMIT {n}'
        answers.append(http(proxy.url, {"db": db_name, "q": q})[0])

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(1, 10)]
    try:
        for th in threads:
            th.start()
        # One runs upstream, eight wait for this client's slot...
        wait_until(lambda: proxy.metric("moby_query_upstream_waiting") == 8, 20, what="8 waiting")
        assert proxy.metric("moby_query_upstream_inflight") == 1
        # ... and the next is refused at once.
        status, _, body = http(proxy.url, {"db": db_name, "q": 'SELECT "x" FROM "raw"."vibration" LIMIT 99'})
        assert status == 429, body
        assert "too many concurrent queries from this client" in orjson.loads(body)["error"]
    finally:
        frozen(False)
        for th in threads:
            th.join(timeout=60)
    assert answers == [200] * 9
    assert proxy.metric("moby_query_upstream_inflight") == 0
