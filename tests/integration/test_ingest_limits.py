"""What a publisher or a reader can make a real `moby serve` hold, write or answer: the
cardinality budgets, reserved names, pages of sensors and dead letters, a full data dir."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from moby.broker.mosquitto import Mosquitto
from moby.mqtt import SessionOptions, open_connection
from moby.store.influxd import Influxd
from tests.support import Backend, http_json, influx_query, mosquitto_pub_lines, telemetry, wait_until

pytestmark = pytest.mark.integration

MakeBackend = Callable[..., Backend]


@pytest.fixture
def factory() -> str:
    return f"f{uuid.uuid4().hex[:8]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def publish_many(port: int, messages: list[tuple[str, bytes]], *, retain: bool = False) -> None:
    """QoS 1 publishes to any number of topics on one connection; returns when all are acknowledged."""

    async def run() -> None:
        options = SessionOptions(
            client_id=f"pub-{uuid.uuid4().hex[:8]}", clean_start=True, session_expiry_s=0
        )
        conn, _ = await open_connection("127.0.0.1", port, options, lambda *a: None)
        try:
            for i in range(0, len(messages), 100):
                await asyncio.gather(
                    *(conn.publish(t, p, qos=1, retain=retain) for t, p in messages[i : i + 100])
                )
        finally:
            await conn.disconnect()

    asyncio.run(run())


def retained_clear(port: int, topics: list[str]) -> None:
    publish_many(port, [(t, b"") for t in topics], retain=True)


def dlq(backend: Backend, query: str = "") -> tuple[dict[str, Any], dict[str, str], int]:
    """A page of /api/v1/dlq: its body, its headers and its size in bytes."""
    with urllib.request.urlopen(f"{backend.api}/api/v1/dlq{query}", timeout=30) as r:
        raw = r.read()
        return orjson.loads(raw), dict(r.headers), len(raw)


def measurements(backend: Backend) -> set[str]:
    results = influx_query(backend.influx_url, "SHOW MEASUREMENTS", backend.db)
    return {v[0] for s in results[0].get("series", []) for v in s["values"]}


def continuous_queries(backend: Backend) -> set[str]:
    results = influx_query(backend.influx_url, "SHOW CONTINUOUS QUERIES")
    return {
        v[0] for s in results[0].get("series", []) if s["name"] == backend.db for v in s.get("values", [])
    }


# -- made-up sensor types and sensor ids -----------------------------------------------------------
def test_made_up_sensor_types_store_nothing_and_get_no_continuous_queries(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str
) -> None:
    backend = make_backend(broker, influxd)
    t = now_ms()
    made_up = [
        (f"moby/{factory}/s1/telemetry", telemetry(i, t - i, sensor_type=f"made_up_{i}")) for i in range(60)
    ]
    reserved = [
        (f"moby/{factory}/s1/telemetry", telemetry(100 + i, t, sensor_type=name))
        for i, name in enumerate(("moby_internal", "moby_sensor_status"))
    ]
    publish_many(broker.port, [*made_up, *reserved, (f"moby/{factory}/s1/telemetry", telemetry(1000, t))])
    wait_until(lambda: backend.stored() == 1, 15, what="the one good reading")
    wait_until(lambda: backend.get("/api/v1/dlq")["total"] == 62, 10, what="62 dead letters")
    assert backend.get("/api/v1/dlq?reason=cardinality_limit&limit=1000")["items"].__len__() == 60
    assert len(backend.get("/api/v1/dlq?reason=invalid_schema")["items"]) == 2
    assert backend.metric("moby_cardinality_rejected_total", 'limit="sensor_type"') == 60
    assert not {m for m in measurements(backend) if m.startswith("made_up")}
    # The backend's own measurements hold only what the backend wrote.
    rows = influx_query(backend.influx_url, 'SELECT count("seq") FROM "moby_internal"', backend.db)
    assert "series" not in rows[0]
    wait_until(lambda: continuous_queries(backend), 30, what="the rollup queries")
    assert all("made_up" not in cq for cq in continuous_queries(backend))


def test_many_made_up_sensor_ids_stay_bounded_and_sensors_come_in_pages(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str
) -> None:
    backend = make_backend(broker, influxd, moby_max_sensors_per_factory="50")
    t = now_ms()
    publish_many(
        broker.port, [(f"moby/{factory}/s{i:03d}/telemetry", telemetry(i, t - i)) for i in range(300)]
    )
    wait_until(
        lambda: backend.get("/api/v1/dlq?reason=cardinality_limit&limit=1000")["items"].__len__() == 250, 20
    )
    wait_until(lambda: backend.stored() == 50, 15, what="50 points")
    assert backend.metric("moby_cardinality_rejected_total", 'limit="sensors_per_factory"') == 250

    pages: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = backend.get(f"/api/v1/sensors?factory_id={factory}&limit=20{cursor}")
        pages.append(page)
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert [len(p["items"]) for p in pages] == [20, 20, 10]
    assert all(p["total"] == 50 for p in pages)
    ids = [s["sensor_id"] for p in pages for s in p["items"]]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert http_json(f"{backend.api}/api/v1/sensors?cursor=bad")[0] == 422


# -- online, and gateways ---------------------------------------------------------------------------
def test_a_sensor_sending_data_is_online_whatever_an_old_status_says(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str
) -> None:
    status = f"moby/{factory}/s1/status"
    gateway = f"moby/{factory}/sim-gw-00/status"
    offline = orjson.dumps({"schema": "moby.status.v1", "online": False})
    publish_many(broker.port, [(status, offline)], retain=True)  # an old Last Will
    try:
        backend = make_backend(broker, influxd)
        gateway_birth = {
            "schema": "moby.status.v1",
            "online": True,
            "gateway": True,
            "model": "moby-simulate",
        }
        publish_many(broker.port, [(gateway, orjson.dumps(gateway_birth))], retain=True)
        mosquitto_pub_lines(broker.port, f"moby/{factory}/s1/telemetry", [telemetry(1, now_ms())])
        wait_until(lambda: backend.get(f"/api/v1/sensors?factory_id={factory}")["total"] == 1, 10)
        [s1] = backend.get(f"/api/v1/sensors?factory_id={factory}")["items"]
        assert s1["sensor_id"] == "s1"
        assert s1["online"] is True and s1["reported_online"] is False
        wait_until(lambda: backend.get(f"/api/v1/gateways?factory_id={factory}")["total"] == 1, 10)
        [gw] = backend.get(f"/api/v1/gateways?factory_id={factory}")["items"]
        assert gw["gateway_id"] == "sim-gw-00" and gw["online"] is True
        assert http_json(f"{backend.api}/api/v1/sensors/sim-gw-00?factory_id={factory}")[0] == 404
    finally:
        retained_clear(broker.port, [status, gateway])


# -- reserved names, and a range InfluxDB cannot hold -------------------------------------------------
def test_a_value_named_like_a_tag_cannot_hide_another_sensors_readings(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str
) -> None:
    backend = make_backend(broker, influxd)
    t = now_ms() - 10_000
    mosquitto_pub_lines(broker.port, f"moby/{factory}/s1/telemetry", [telemetry(i, t + i) for i in range(3)])
    mosquitto_pub_lines(
        broker.port,
        f"moby/{factory}/s2/telemetry",
        [telemetry(9, t, sensor_id=1.0), telemetry(10, t, time=1.0), telemetry(11, t, qc=1.0)],
    )
    wait_until(lambda: backend.get("/api/v1/dlq?reason=invalid_schema")["items"].__len__() == 3, 10)
    wait_until(lambda: backend.stored() == 3, 15, what="s1's 3 points")
    # A field named like the tag, written before such names were refused: s1 stays readable.
    body = f"vibration,factory_id={factory},sensor_id=s2 sensor_id=1.0,rms_velocity=5.0,seq=1i {t}"
    urllib.request.urlopen(
        f"{backend.influx_url}/write?db={backend.db}&precision=ms", body.encode(), timeout=10
    )
    readings = backend.get(f"/api/v1/sensors/s1/readings?factory_id={factory}&fields=rms_velocity")
    assert len(readings["points"]) == 3


def test_a_range_influxdb_cannot_hold_is_refused_clearly(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str
) -> None:
    backend = make_backend(broker, influxd)
    mosquitto_pub_lines(broker.port, f"moby/{factory}/s1/telemetry", [telemetry(1, now_ms())])
    wait_until(lambda: backend.stored() == 1, 15, what="a point")
    base = f"{backend.api}/api/v1/sensors/s1/readings?factory_id={factory}"
    for query in ("&start=0001-01-01T00:00:00Z", "&start=2020-01-01T00:00:00Z&end=9999-01-01T00:00:00Z"):
        status, body = http_json(base + query)
        assert status == 422, (status, body)
        assert "InfluxDB can hold" in body["detail"] and "1677-09-21" in body["detail"]
    assert http_json(base + "&start=1700-01-01T00:00:00Z")[0] == 200


# -- dead letters: pages by bytes, streamed ---------------------------------------------------------
def test_dead_letters_come_in_pages_bounded_by_bytes(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str
) -> None:
    backend = make_backend(broker, influxd)
    big = [b"{" + b"x" * 250_000 + b"%d" % i for i in range(30)]  # invalid JSON, 250 KB each
    mosquitto_pub_lines(broker.port, f"moby/{factory}/s1/telemetry", big)
    wait_until(lambda: backend.get("/api/v1/dlq?limit=1")["total"] == 30, 20, what="30 dead letters")

    first, headers, size = dlq(backend, "?limit=10000")
    assert headers.get("Transfer-Encoding") == "chunked"  # streamed, not built whole
    assert size <= 4 * 1024 * 1024 + 300_000  # the default budget, give or take one item
    assert first["total"] == 30 and 0 < len(first["items"]) < 30 and first["bytes"] > 30 * 250_000
    seen = [item["payload"] for item in first["items"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page, _, size = dlq(backend, f"?limit=10000&max_bytes=600000&cursor={cursor}")
        assert size <= 600_000 + 300_000 and len(page["items"]) >= 1
        seen += [item["payload"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert seen == [p.decode() for p in reversed(big)]  # each once, newest first
    assert dlq(backend, "?limit=3")[0]["items"].__len__() == 3
    assert backend.get("/healthz") == {"status": "ok"}


# -- a full data dir ----------------------------------------------------------------------------------
@pytest.fixture
def small_disk_backend(
    own_broker: Mosquitto, influxd: Influxd, tmp_path: Path, db_name: str
) -> Iterator[Backend]:
    """A backend whose files may not grow past 4 MiB (RLIMIT_FSIZE): its data dir 'fills up'."""
    backend = Backend(
        data_dir=tmp_path / "small",
        mqtt_url=own_broker.url,
        influx_url=influxd.url,
        db=db_name,
        client_id=f"moby-test-{uuid.uuid4().hex[:8]}",
        extra_env={"MOBY_INTERNAL_METRICS_INTERVAL_S": "0"},
    )
    # soft limit only: the test lifts it again (raising a hard limit takes privileges)
    backend.argv = ["prlimit", f"--fsize={4 * 1024 * 1024}:unlimited", *backend.argv]
    backend.start()
    yield backend
    backend.stop()


def test_a_full_data_dir_makes_the_backend_unready_and_says_why(
    own_broker: Mosquitto, small_disk_backend: Backend, factory: str
) -> None:
    backend = small_disk_backend
    filler = [b"{" + b"x" * 250_000 + b"%d" % i for i in range(40)]  # 10 MB of dead letters
    mosquitto_pub_lines(own_broker.port, f"moby/{factory}/s1/telemetry", filler)
    wait_until(lambda: http_json(f"{backend.api}/readyz")[0] == 503, 30, what="not ready")
    _, body = http_json(f"{backend.api}/readyz")
    assert body["storage"] is False and body["mqtt"] is True
    assert any("data dir refuses writes" in reason for reason in body["reasons"]), body
    assert backend.metric("moby_storage_error") == 1
    assert "data dir refuses writes" in backend.log_path.read_text()
    # A reading sent meanwhile is held by the broker (not acknowledged), then stored once the disk
    # has room again.
    topic = f"moby/{factory}/s1/telemetry"
    argv = ["mosquitto_pub", "-p", str(own_broker.port), "-q", "1", "-t", topic, "-s", "-V", "mqttv5"]
    publisher = subprocess.Popen(argv, stdin=subprocess.PIPE)
    publisher.communicate(telemetry(1, now_ms()), timeout=10)
    assert backend.stored() == 0
    subprocess.run(["prlimit", f"--pid={backend.pid}", "--fsize=unlimited"], check=True)
    wait_until(lambda: http_json(f"{backend.api}/readyz")[0] == 200, 30, what="ready again")
    assert backend.metric("moby_storage_error") == 0
    wait_until(lambda: backend.stored() == 1, 15, what="the held reading")
