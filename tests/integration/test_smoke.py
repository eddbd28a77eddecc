"""N messages in → N points stored, with the API showing what happened."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.support import influx_query, mosquitto_pub_lines, telemetry, wait_until

pytestmark = pytest.mark.integration


def test_n_messages_in_n_points_stored(broker, influxd, make_backend) -> None:
    backend = make_backend(broker, influxd)
    now = int(time.time() * 1000)
    n = 2000
    # A factory of its own: the shared broker holds retained births from other tests.
    mosquitto_pub_lines(broker.port, "moby/smoke/s1/telemetry", (telemetry(i, now - n + i) for i in range(n)))
    wait_until(lambda: backend.stored() == n, 30, what=f"{n} points")
    time.sleep(1.5)
    assert backend.stored() == n  # and not more
    sensors = backend.get("/api/v1/sensors?factory_id=smoke")
    assert sensors["total"] == 1
    assert sensors["items"][0]["sensor_id"] == "s1"
    assert sensors["items"][0]["readings"] == n
    assert backend.metric("moby_readings_accepted_total") == n


EXTREMES = {"tiny": 1e-7, "huge": 1e22, "neg_zero": -0.0, "denormal": 5e-324, "max": 1.7976931348623157e308}


def test_extreme_floats_are_stored_exactly_single_and_batched(broker, influxd, make_backend) -> None:
    """Fields are written in orjson's float syntax (1e-7, 1e+22, ...): InfluxDB must read them back
    bit for bit, as floats, from single and batch messages alike."""
    backend = make_backend(broker, influxd, moby_sensor_types="vibration,extremes")  # a type of its own
    now = int(time.time() * 1000)
    batch = orjson.dumps(
        {
            "schema": "moby.telemetry.v1",
            "sensor_type": "extremes",
            "readings": [{"ts": now - 10 + i, "seq": 1 + i, "values": EXTREMES} for i in range(3)],
        }
    )
    mosquitto_pub_lines(
        broker.port, "moby/extremes/s1/telemetry", [telemetry(0, now - 20, "extremes", **EXTREMES), batch]
    )
    wait_until(lambda: backend.stored() == 4, 30, what="4 points")
    [result] = influx_query(influxd.url, 'SELECT * FROM "raw"."extremes"', backend.db)
    [series] = result["series"]
    assert len(series["values"]) == 4
    for row in series["values"]:
        got = dict(zip(series["columns"], row, strict=True))
        # (InfluxDB's JSON renders a float -0.0 as 0, so the sign cannot be checked here.)
        assert {name: float(got[name]) for name in EXTREMES} == EXTREMES
    [keys] = influx_query(influxd.url, 'SHOW FIELD KEYS FROM "extremes"', backend.db)
    types = dict(keys["series"][0]["values"])
    assert {types[name] for name in EXTREMES} == {"float"}
