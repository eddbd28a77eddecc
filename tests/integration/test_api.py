"""The HTTP API of a real `moby serve`, fed through a real Mosquitto into a real InfluxDB."""

from __future__ import annotations

import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from moby.broker.mosquitto import Mosquitto
from moby.store.influxd import Influxd
from tests.support import Backend, http_json, influx_query, mosquitto_pub_lines, telemetry, wait_until

pytestmark = pytest.mark.integration

MakeBackend = Callable[..., Backend]


def publish(port: int, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> None:
    argv = ["mosquitto_pub", "-p", str(port), "-q", str(qos), "-t", topic, "-V", "mqttv5"]
    argv += ["-s"] if payload else ["-n"]  # -n: the empty message that clears a retained one
    subprocess.run([*argv, "-r"] if retain else argv, input=payload, check=True, timeout=30)


def status(**fields: Any) -> bytes:
    return orjson.dumps({"schema": "moby.status.v1", **fields})


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sensor(backend: Backend, factory_id: str, sensor_id: str) -> dict[str, Any] | None:
    items = backend.get(f"/api/v1/sensors?factory_id={factory_id}")["items"]
    found = [s for s in items if s["sensor_id"] == sensor_id]
    return found[0] if found else None


def stored_rows(backend: Backend, factory_id: str) -> list[dict[str, Any]]:
    results = influx_query(
        backend.influx_url,
        f'SELECT * FROM "raw"."vibration" WHERE factory_id = \'{factory_id}\' ORDER BY time',
        backend.db,
    )
    rows: list[dict[str, Any]] = []
    for series in results[0].get("series", []):
        rows.extend(dict(zip(series["columns"], values, strict=True)) for values in series["values"])
    return rows


@pytest.fixture
def factory() -> str:
    """A factory id of this test's own: the broker (and its retained messages) is shared."""
    return f"f{uuid.uuid4().hex[:8]}"


def test_birth_enriches_points_and_the_sensor_list(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str
) -> None:
    birth = status(
        online=True,
        ts=now_ms(),
        sensor_type="vibration",
        model="VX-1",
        firmware="2.0.1",
        line_id="L1",
        machine_id="M-7",
        units={"rms_velocity": "mm/s"},
    )
    s1, s2 = f"moby/{factory}/s1", f"moby/{factory}/s2"
    # s1's birth is retained on the broker before the backend starts; s2's arrives live.
    publish(broker.port, f"{s1}/status", birth, retain=True)
    try:
        backend = make_backend(broker, influxd)
        publish(broker.port, f"{s2}/status", status(online=True, line_id="L2", machine_id="M-8"), retain=True)
        wait_until(
            lambda: all((sensor(backend, factory, s) or {}).get("metadata") for s in ("s1", "s2")),
            10,
            what="both births",
        )
        t0 = now_ms() - 10_000
        for topic in (s1, s2):
            mosquitto_pub_lines(
                broker.port,
                f"{topic}/telemetry",
                [telemetry(i, t0 + i * 1000, rms_velocity=1.5 + i, peak_accel=0.5 * i) for i in range(5)],
            )
        wait_until(lambda: len(stored_rows(backend, factory)) == 10, 15, what="10 points")
        rows = stored_rows(backend, factory)
        tags = {(r["sensor_id"], r["factory_id"], r["line_id"], r["machine_id"]) for r in rows}
        assert tags == {("s1", factory, "L1", "M-7"), ("s2", factory, "L2", "M-8")}
        s1_rows = [r for r in rows if r["sensor_id"] == "s1"]
        assert [r["seq"] for r in s1_rows] == [0, 1, 2, 3, 4]
        assert [r["time"] for r in s1_rows] == [t0 + i * 1000 for i in range(5)]
        assert [r["rms_velocity"] for r in s1_rows] == [1.5, 2.5, 3.5, 4.5, 5.5]

        s = sensor(backend, factory, "s1")
        assert s is not None
        assert s["online"] is True and s["reported_online"] is True
        assert s["sensor_type"] == "vibration"
        assert s["readings"] == 5
        assert s["last_seen"] is not None
        assert s["metadata"] == {
            "sensor_type": "vibration",
            "model": "VX-1",
            "firmware": "2.0.1",
            "line_id": "L1",
            "machine_id": "M-7",
            "units": {"rms_velocity": "mm/s"},
        }
        assert backend.get(f"/api/v1/sensors/s1?factory_id={factory}")["metadata"]["line_id"] == "L1"
        listed = backend.get(f"/api/v1/sensors?factory_id={factory}")
        assert listed["total"] == 2
        assert [x["sensor_id"] for x in listed["items"]] == ["s1", "s2"]

        # The Last Will: offline, metadata kept.
        publish(broker.port, f"{s1}/status", status(online=False), retain=True)
        wait_until(lambda: (sensor(backend, factory, "s1") or {}).get("online") is False, 10, what="offline")
        s = sensor(backend, factory, "s1")
        assert s is not None and s["reported_online"] is False
        assert s["metadata"]["machine_id"] == "M-7"
        offline = backend.get(f"/api/v1/sensors?factory_id={factory}&online=false")
        assert [x["sensor_id"] for x in offline["items"]] == ["s1"]
        online = backend.get(f"/api/v1/sensors?factory_id={factory}&online=true")
        assert [x["sensor_id"] for x in online["items"]] == ["s2"]
    finally:
        for topic in (s1, s2):
            publish(broker.port, f"{topic}/status", b"", retain=True)  # clear the retained status


def test_readings_endpoint(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str
) -> None:
    backend = make_backend(broker, influxd)
    t0 = now_ms() - 60_000
    payloads = [
        telemetry(i, t0 + i * 1000, rms_velocity=float(i), peak_accel=10.0 + i, temperature=40.0)
        for i in range(20)
    ]
    mosquitto_pub_lines(broker.port, f"moby/{factory}/s1/telemetry", payloads)
    wait_until(lambda: len(stored_rows(backend, factory)) == 20, 15, what="20 points")

    base = f"/api/v1/sensors/s1/readings?factory_id={factory}"
    everything = backend.get(base)
    assert everything["measurement"] == "vibration"
    assert everything["resolution"] == "raw"
    assert everything["fields"] == ["peak_accel", "rms_velocity", "seq", "temperature"]
    assert len(everything["points"]) == 20
    assert everything["points"][0] == {
        "time": iso(t0),
        "rms_velocity": 0.0,
        "peak_accel": 10.0,
        "temperature": 40.0,
        "seq": 0,
    }

    start, end = urllib.parse.quote(iso(t0 + 5000)), urllib.parse.quote(iso(t0 + 9000))
    some = backend.get(f"{base}&fields=rms_velocity&fields=seq&start={start}&end={end}")
    assert some["fields"] == ["rms_velocity", "seq"]
    assert some["points"] == [
        {"time": iso(t0 + i * 1000), "rms_velocity": float(i), "seq": i} for i in range(5, 10)
    ]
    comma = backend.get(f"{base}&fields=peak_accel,seq&start={start}&end={end}&limit=2")
    assert comma["points"] == [{"time": iso(t0 + i * 1000), "peak_accel": 10.0 + i, "seq": i} for i in (5, 6)]

    # Errors are answered, not crashed on.
    assert http_json(f"{backend.api}{base}&fields=bad%20name")[0] == 422
    assert http_json(f"{backend.api}{base}&start={end}&end={start}")[0] == 422
    assert http_json(f"{backend.api}/api/v1/sensors/nobody/readings")[0] == 404
    assert http_json(f"{backend.api}/api/v1/sensors/bad%20id/readings")[0] == 422


def test_latest_endpoint(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str
) -> None:
    """Every sensor's newest reading: what the console's first screen shows."""
    backend = make_backend(broker, influxd)
    t0 = now_ms() - 60_000
    vib = [telemetry(i, t0 + i * 1000, rms_velocity=1.0 + i, iso_zone=1.0) for i in range(5)]
    mosquitto_pub_lines(broker.port, f"moby/{factory}/v1/telemetry", vib)
    newest_noise = orjson.dumps(
        {
            "schema": "moby.telemetry.v1",
            "sensor_type": "noise",
            "readings": [
                {"ts": t0 + 3000, "seq": 7, "values": {"laeq": 71.5, "lamax": 80.0}, "quality": "uncertain"},
                {"ts": t0, "seq": 6, "values": {"laeq": 60.0, "lamax": 61.0}},  # older, sent later
            ],
        }
    )
    mosquitto_pub_lines(broker.port, f"moby/{factory}/n1/telemetry", [newest_noise])
    other = f"{factory}x"
    mosquitto_pub_lines(broker.port, f"moby/{other}/v9/telemetry", [telemetry(0, t0, rms_velocity=9.0)])
    wait_until(lambda: backend.stored() >= 8, 15, what="8 points")

    got = backend.get(f"/api/v1/latest?factory_id={factory}")
    assert got["window_s"] == 6 * 3600
    assert got["items"] == [
        {
            "factory_id": factory,
            "sensor_id": "n1",
            "measurement": "noise",
            "time": iso(t0 + 3000),
            "seq": 7,
            "values": {"laeq": 71.5, "lamax": 80.0},  # the quality string is not a value
        },
        {
            "factory_id": factory,
            "sensor_id": "v1",
            "measurement": "vibration",
            "time": iso(t0 + 4000),
            "seq": 4,
            "values": {"rms_velocity": 5.0, "iso_zone": 1.0},
        },
    ]
    only_noise = backend.get(f"/api/v1/latest?factory_id={factory}&sensor_type=noise")["items"]
    assert [i["sensor_id"] for i in only_noise] == ["n1"]
    everyone = {(i["factory_id"], i["sensor_id"]) for i in backend.get("/api/v1/latest")["items"]}
    assert {(factory, "n1"), (factory, "v1"), (other, "v9")} <= everyone
    assert backend.get("/api/v1/latest?factory_id=nobody-here")["items"] == []
    assert http_json(f"{backend.api}/api/v1/latest?factory_id=bad%20id")[0] == 422
    assert http_json(f"{backend.api}/api/v1/latest?limit=0")[0] == 422


def test_dead_letters_docs_and_metrics(
    broker: Mosquitto, influxd: Influxd, make_backend: MakeBackend, factory: str
) -> None:
    backend = make_backend(broker, influxd)
    t = now_ms()
    mosquitto_pub_lines(
        broker.port, f"moby/{factory}/s1/telemetry", [telemetry(i, t - 100 + i) for i in range(3)]
    )
    bad = [
        (f"moby/{factory}/s1/telemetry", b"{not json"),
        (f"moby/{factory}/s1/telemetry", b'{"schema": "moby.telemetry.v1", "sensor_type": "vibration"}'),
        (f"moby/{factory}/s 1/telemetry", telemetry(9, t)),
        (f"moby/{factory}/s1/telemetry", telemetry(10, t - 30 * 86400 * 1000)),
        (f"moby/{factory}/s1/telemetry", b'{"a": "\xff\xfe"}'),
    ]
    for topic, payload in bad:
        publish(broker.port, topic, payload)
    wait_until(lambda: backend.get("/api/v1/dlq")["total"] == len(bad), 10, what="5 dead letters")
    wait_until(lambda: backend.stored() == 3, 15, what="3 points")

    dlq = backend.get("/api/v1/dlq")
    assert set(dlq) == {"total", "evicted", "bytes", "items", "next_cursor"}
    assert (dlq["total"], dlq["evicted"]) == (5, 0)
    items = dlq["items"]
    for item in items:
        assert set(item) == {"received_at", "topic", "reason", "detail", "payload"}
        assert item["detail"]
        datetime.fromisoformat(item["received_at"])
    assert [i["topic"] for i in items] == [topic for topic, _ in reversed(bad)]
    assert [i["reason"] for i in items] == [
        "invalid_json",
        "time_out_of_range",
        "invalid_topic",
        "invalid_schema",
        "invalid_json",
    ]
    assert items[0]["payload"] == '{"a": "\\xff\\xfe"}'
    assert items[-1]["payload"] == "{not json"
    assert [i["received_at"] for i in items] == sorted((i["received_at"] for i in items), reverse=True)
    assert len(backend.get("/api/v1/dlq?limit=2")["items"]) == 2
    only = backend.get("/api/v1/dlq?reason=invalid_json")
    assert [i["payload"] for i in only["items"]] == ['{"a": "\\xff\\xfe"}', "{not json"]
    assert only["total"] == 5  # total counts the whole store

    # Docs.
    with urllib.request.urlopen(f"{backend.api}/docs", timeout=5) as r:
        assert r.status == 200
        assert b"swagger" in r.read().lower()
    openapi = backend.get("/openapi.json")
    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/sensors", "/api/v1/dlq"):
        assert path in openapi["paths"]
    assert backend.get("/healthz") == {"status": "ok"}
    assert backend.get("/readyz")["ready"] is True

    # Metrics.
    wait_until(lambda: backend.metric("moby_end_to_end_lag_seconds_count") >= 1, 10, what="lag metric")
    # Other tests' retained statuses reach every new backend: count telemetry only.
    assert backend.metric("moby_messages_received_total", 'kind="telemetry"') == 3 + len(bad)
    assert backend.metric("moby_readings_accepted_total") == 3
    assert backend.metric("moby_messages_rejected_total") == 5
    assert backend.metric("moby_messages_rejected_total", 'reason="invalid_json"') == 2
    assert backend.metric("moby_messages_rejected_total", 'reason="invalid_schema"') == 1
    assert backend.metric("moby_messages_rejected_total", 'reason="invalid_topic"') == 1
    assert backend.metric("moby_messages_rejected_total", 'reason="time_out_of_range"') == 1
    wait_until(lambda: backend.metric("moby_queue_depth_points") == 0, 5, what="an empty queue")
    assert backend.metric("moby_write_latency_seconds_count") >= 1
    assert backend.metric("moby_write_latency_seconds_sum") > 0
    with urllib.request.urlopen(f"{backend.api}/metrics", timeout=5) as r:
        text = r.read().decode()
    for name in (
        "moby_messages_received_total",
        "moby_readings_accepted_total",
        "moby_messages_rejected_total",
        "moby_queue_depth_points",
        "moby_write_latency_seconds_bucket",
        "moby_end_to_end_lag_seconds_bucket",
    ):
        assert f"\n{name}" in text, name
