"""Failure paths: nothing lost, nothing stuck, memory bounded."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request

import orjson
import pytest

from tests.support import (
    StreamPublisher,
    count_points,
    http_json,
    influx_query,
    mosquitto_pub_lines,
    rss_mb,
    telemetry,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_influxdb_down_20s_mid_stream_loses_nothing(own_influxd, broker, make_backend) -> None:
    backend = make_backend(broker, own_influxd)
    pub = StreamPublisher(broker.port, sensors=4, rate=1000).start()
    time.sleep(3)
    own_influxd.stop()
    outage_started = time.monotonic()
    rss = []
    while time.monotonic() - outage_started < 20:
        rss.append(rss_mb(backend.pid))
        time.sleep(1)
    queued_during_outage = backend.metric("moby_queue_depth_points")
    own_influxd.start(timeout_s=60)
    time.sleep(3)
    sent = pub.stop()
    wait_until(lambda: backend.stored() == sent, 90, what=f"{sent} points stored")
    time.sleep(1)
    assert backend.stored() == sent
    assert queued_during_outage > 10_000  # the outage really held data back
    assert backend.get("/api/v1/dlq")["total"] == 0
    # memory stays bounded and flat while the database is away
    assert max(rss) < 300, rss
    assert max(rss) - min(rss[2:]) < 40, rss
    assert backend.metric("moby_write_errors_total") > 0


def test_backend_sigkill_mid_stream_loses_nothing(broker, influxd, make_backend) -> None:
    backend = make_backend(broker, influxd)
    pub = StreamPublisher(broker.port, sensors=4, rate=1500).start()
    time.sleep(4)
    backend.kill()
    time.sleep(2)
    restarted = make_backend(broker, influxd)  # same data dir and client id
    time.sleep(2)
    sent = pub.stop()
    wait_until(lambda: restarted.stored() == sent, 90, what=f"{sent} points stored")
    time.sleep(1.5)
    assert restarted.stored() == sent


def test_burst_of_100k_messages_loses_nothing(broker, influxd, make_backend) -> None:
    backend = make_backend(broker, influxd)
    now = int(time.time() * 1000)
    n_sensors, per_sensor = 20, 5000
    threads = [
        threading.Thread(
            target=mosquitto_pub_lines,
            args=(
                broker.port,
                f"moby/burst/s{s}/telemetry",
                [telemetry(i, now - per_sensor + i) for i in range(per_sensor)],
            ),
        )
        for s in range(n_sensors)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = n_sensors * per_sensor
    wait_until(lambda: backend.stored() == total, 180, interval=1, what=f"{total} points")
    assert backend.get("/api/v1/dlq")["total"] == 0


def test_broker_restart_loses_nothing(own_broker, influxd, make_backend) -> None:
    backend = make_backend(own_broker, influxd)
    now = int(time.time() * 1000)
    mosquitto_pub_lines(
        own_broker.port, "moby/f1/s1/telemetry", [telemetry(i, now - 10_000 + i) for i in range(500)]
    )
    # Stop the backend, publish while it is away (the broker keeps its session's messages),
    # then restart the broker too: persistence must keep the backlog across the restart.
    backend.stop()
    mosquitto_pub_lines(
        own_broker.port, "moby/f1/s1/telemetry", [telemetry(i, now - 10_000 + i) for i in range(500, 1500)]
    )
    own_broker.stop()
    own_broker.start()
    restarted = make_backend(own_broker, influxd)
    mosquitto_pub_lines(
        own_broker.port, "moby/f1/s1/telemetry", [telemetry(i, now - 10_000 + i) for i in range(1500, 2000)]
    )
    wait_until(lambda: restarted.stored() == 2000, 60, what="2000 points")


def test_backend_reconnects_after_broker_restart(own_broker, influxd, make_backend) -> None:
    backend = make_backend(own_broker, influxd)
    own_broker.stop()
    wait_until(lambda: backend.metric("moby_mqtt_connected") == 0, 10, what="disconnect noticed")
    own_broker.start()
    wait_until(lambda: backend.metric("moby_mqtt_connected") == 1, 40, what="reconnected")
    now = int(time.time() * 1000)
    mosquitto_pub_lines(
        own_broker.port, "moby/f1/s1/telemetry", [telemetry(i, now - 1000 + i) for i in range(300)]
    )
    wait_until(lambda: backend.stored() == 300, 30, what="300 points")


def test_full_queue_holds_acks_and_broker_keeps_the_backlog(own_influxd, broker, make_backend) -> None:
    backend = make_backend(broker, own_influxd, moby_queue_max_bytes=1024 * 1024)
    own_influxd.stop()
    now = int(time.time() * 1000)
    n = 20_000  # ~2 MB of line protocol: twice the queue's bound
    mosquitto_pub_lines(broker.port, "moby/f1/s1/telemetry", [telemetry(i, now - n + i) for i in range(n)])
    wait_until(lambda: backend.metric("moby_queue_full") == 1, 30, what="queue full")
    assert backend.metric("moby_queue_depth_bytes") <= 1024 * 1024 + 300_000
    status, body = http_json(backend.api + "/readyz")
    assert status == 503 and body["influx"] is False and body["queue_full"] is True
    own_influxd.start(timeout_s=60)
    wait_until(lambda: count_points(own_influxd.url, backend.db) == n, 120, interval=1, what=f"{n} points")
    assert backend.metric("moby_queue_full") == 0


def test_sigterm_flushes_the_queue_and_exits_cleanly(broker, influxd, make_backend) -> None:
    backend = make_backend(broker, influxd, moby_batch_linger_s=30, moby_batch_max_points=1_000_000)
    now = int(time.time() * 1000)
    mosquitto_pub_lines(
        broker.port, "moby/f1/s1/telemetry", [telemetry(i, now - 1000 + i) for i in range(800)]
    )
    wait_until(lambda: backend.metric("moby_queue_depth_points") == 800, 20, what="queued")
    assert backend.stored() <= 0  # lingering: nothing written yet
    backend.signal(signal.SIGTERM)
    assert backend.proc is not None
    assert backend.proc.wait(30) == 0
    assert backend.stored() == 800


def _bad_corpus(now: int) -> list[tuple[str, bytes, str]]:
    """(topic, payload, expected reason) — every way a sensor or an attacker can get it wrong."""
    good = {
        "schema": "moby.telemetry.v1",
        "sensor_type": "vibration",
        "ts": now,
        "seq": 1,
        "values": {"x": 1.0},
    }

    def tel(**change: object) -> bytes:
        return orjson.dumps({**good, **change})

    t = "moby/f1/s1/telemetry"
    return [
        (t, b"{not json", "invalid_json"),
        (t, b"\xff\xfe\x00garbage", "invalid_json"),
        (
            t,
            b'{"schema":"moby.telemetry.v1","sensor_type":"vibration","ts":1,"seq":1,"values":{"x":NaN}}',
            "invalid_schema",
        ),
        (
            t,
            b'{"schema":"moby.telemetry.v1","sensor_type":"vibration","ts":1,"seq":1,"values":{"x":Infinity}}',
            "invalid_schema",
        ),
        (t, tel(values={"x": "1.5"}), "invalid_schema"),
        (t, tel(values={"x": True}), "invalid_schema"),
        (t, tel(seq=-1), "invalid_schema"),
        (t, tel(schema="moby.telemetry.v2"), "invalid_schema"),
        (t, tel(values={}), "invalid_schema"),
        (t, tel(values={"seq": 1.0}), "invalid_schema"),
        (t, tel(values={"sensor_id": 1.0}), "invalid_schema"),
        (t, tel(values={"time": 1.0}), "invalid_schema"),
        (t, tel(sensor_type="moby_internal"), "invalid_schema"),
        (t, tel(sensor_type="made_up"), "cardinality_limit"),
        (t, tel(ts="20261201T135157Z"), "invalid_schema"),
        (t, tel(sensor_id="s2")[:-1] + b',"sensor_id":"s1"}', "invalid_json"),
        (t, tel(sensor_type="Vibration; DROP"), "invalid_schema"),
        (t, tel(values={'x" OR 1=1 --': 1.0}), "invalid_schema"),
        (t, tel(ts=now - 8 * 86400 * 1000), "time_out_of_range"),
        (t, tel(ts=now + 3600 * 1000), "time_out_of_range"),
        (t, tel(sensor_id="s2"), "identity_mismatch"),
        (t, tel(factory_id="f9"), "identity_mismatch"),
        (t, tel(values={"x": 1.0}, pad="x" * 300_000), "too_large"),
        ("moby/f1/s,1=x/telemetry", tel(), "invalid_topic"),
        ("moby/f1/s 1/telemetry", tel(), "invalid_topic"),
        ("moby/f'1/s1/telemetry", tel(), "invalid_topic"),
        ("moby/f1/" + "s" * 65 + "/telemetry", tel(), "invalid_topic"),
        ("moby/f1/s1/status", b'{"schema":"moby.status.v1","online":"yes"}', "invalid_schema"),
        ("moby/f1/s1/health", b'{"schema":"moby.health.v1","ts":1}', "invalid_schema"),
    ]


def test_malformed_input_is_dead_lettered_never_stored_and_nothing_stalls(
    broker, influxd, make_backend
) -> None:
    backend = make_backend(broker, influxd)
    now = int(time.time() * 1000)
    corpus = _bad_corpus(now)
    for topic, payload, _ in corpus:
        subprocess.run(
            ["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", topic, "-s", "-V", "mqttv5"],
            input=payload,
            check=True,
            timeout=30,
        )
    wait_until(lambda: backend.get("/api/v1/dlq")["total"] >= len(corpus), 30, what="dead letters")
    time.sleep(0.5)
    dlq = backend.get(f"/api/v1/dlq?limit={2 * len(corpus)}")
    assert dlq["total"] == len(corpus)
    # newest first: the same order reversed, each with the reason it deserved
    assert [(i["topic"], i["reason"]) for i in reversed(dlq["items"])] == [(t, r) for t, _, r in corpus]
    assert all(item["detail"] for item in dlq["items"])
    assert backend.stored() <= 0  # nothing reached InfluxDB
    status, body = http_json(backend.api + "/readyz")
    assert status == 200, body
    # and the pipeline still flows
    mosquitto_pub_lines(broker.port, "moby/f1/s1/telemetry", [telemetry(7, now)])
    wait_until(lambda: backend.stored() == 1, 20, what="the good message after the bad ones")
    for reason in {r for _, _, r in corpus}:
        expected = sum(1 for _, _, r in corpus if r == reason)
        assert backend.metric("moby_messages_rejected_total", f'reason="{reason}"') == expected


def test_points_influxdb_rejects_are_isolated_and_the_rest_stored(broker, influxd, make_backend) -> None:
    """A 400 'partial write' (here a field-type conflict) dead-letters just the bad points."""
    backend = make_backend(broker, influxd, moby_batch_linger_s=2, moby_batch_min_points=100_000)
    now = int(time.time() * 1000)
    # rms_velocity already exists as a *string* field in this measurement: every float write
    # of it into the same shard conflicts.
    req = urllib.request.Request(
        f"{influxd.url}/write?db={backend.db}&precision=ms",
        data=f'vibration,factory_id=f0,sensor_id=s0 rms_velocity="broken" {now - 5000}'.encode(),
        method="POST",
    )
    wait_until(lambda: _write_ok(req), 20, what="the database exists")
    vib = [telemetry(i, now - 1000 + i) for i in range(50)]
    temp = [telemetry(i, now - 1000 + i, sensor_type="temperature", celsius=20.5) for i in range(50)]
    threads = [
        threading.Thread(target=mosquitto_pub_lines, args=(broker.port, "moby/f1/vib1/telemetry", vib)),
        threading.Thread(target=mosquitto_pub_lines, args=(broker.port, "moby/f1/temp1/telemetry", temp)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(lambda: backend.get("/api/v1/dlq")["total"] == 50, 60, what="50 rejected points dead-lettered")
    wait_until(lambda: backend.metric("moby_queue_depth_points") == 0, 30, what="queue drained")
    dlq = backend.get("/api/v1/dlq?limit=100")
    assert {item["reason"] for item in dlq["items"]} == {"write_rejected"}
    assert {item["topic"] for item in dlq["items"]} == {"moby/f1/vib1/telemetry"}
    assert all("conflict" in item["detail"] for item in dlq["items"])
    res = influx_query(influxd.url, 'SELECT count("seq") FROM "raw"."temperature"', backend.db)
    assert res[0]["series"][0]["values"][0][1] == 50
    res = influx_query(influxd.url, 'SELECT count("seq") FROM "raw"."vibration"', backend.db)
    assert "series" not in res[0]  # none of the conflicting points were stored
    assert http_json(backend.api + "/readyz")[0] == 200


def _write_ok(req: urllib.request.Request) -> bool:
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return bool(r.status == 204)
    except OSError:
        return False


def test_an_oversized_message_on_a_broker_without_a_packet_limit_does_not_stall_ingest(
    unlimited_broker, influxd, make_backend, tmp_path
) -> None:
    """5 MiB on a broker without max_packet_size, then good data: the good data is stored, the big
    message is a dead letter or dropped by the broker for us (we announced our Maximum Packet
    Size), and the backend never loops reconnecting over it, not even after a restart."""
    backend = make_backend(unlimited_broker, influxd)
    now = int(time.time() * 1000)
    big = tmp_path / "big.json"
    big.write_bytes(b'{"schema":"moby.telemetry.v1","pad":"' + b"x" * (5 * 1024 * 1024) + b'"}')
    subprocess.run(
        ["mosquitto_pub", "-p", str(unlimited_broker.port), "-q", "1", "-t", "moby/f1/big/telemetry",
         "-f", str(big), "-V", "mqttv5"],
        check=True, timeout=60,
    )  # fmt: skip
    mosquitto_pub_lines(
        unlimited_broker.port, "moby/f1/s1/telemetry", [telemetry(i, now - 1000 + i) for i in range(100)]
    )
    wait_until(lambda: backend.stored() == 100, 30, what="the good data after the big message")
    dead = [i for i in backend.get("/api/v1/dlq")["items"] if i["topic"] == "moby/f1/big/telemetry"]
    broker_log = (unlimited_broker.directory / "mosquitto.log").read_text()
    dropped_for_us = "Dropping too large outgoing PUBLISH for moby-test-" in broker_log
    assert [i["reason"] for i in dead] == ["too_large"] or dropped_for_us, broker_log[-2000:]
    assert backend.metric("moby_mqtt_reconnects_total") == 0
    assert http_json(backend.api + "/readyz")[0] == 200
    backend.stop()
    restarted = make_backend(unlimited_broker, influxd)  # same session: nothing is redelivered for ever
    mosquitto_pub_lines(
        unlimited_broker.port, "moby/f1/s1/telemetry", [telemetry(i, now - 1000 + i) for i in range(100, 150)]
    )
    wait_until(lambda: restarted.stored() == 150, 30, what="ingest goes on after a restart")
    assert restarted.metric("moby_mqtt_reconnects_total") == 0
