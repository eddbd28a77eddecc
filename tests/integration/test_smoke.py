"""N messages in → N points stored, with the API showing what happened."""

from __future__ import annotations

import time

import pytest

from tests.support import mosquitto_pub_lines, telemetry, wait_until

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
