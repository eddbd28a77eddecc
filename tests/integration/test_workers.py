"""Several backends in one share group split the stream: each message is processed once."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support import mosquitto_pub_lines, telemetry, wait_until

pytestmark = pytest.mark.integration


def test_two_backends_split_the_stream_without_duplicates(broker, influxd, make_backend) -> None:
    group = f"g{uuid.uuid4().hex[:8]}"
    first = make_backend(broker, influxd, worker="-a", moby_mqtt_share_group=group)
    second = make_backend(broker, influxd, worker="-b", moby_mqtt_share_group=group)
    now = int(time.time() * 1000)
    n = 6000
    mosquitto_pub_lines(
        broker.port, "moby/workers/s1/telemetry", [telemetry(i, now - n + i) for i in range(n)]
    )
    wait_until(lambda: first.stored() == n, 60, what=f"{n} points")
    received = [b.metric("moby_messages_received_total", 'kind="telemetry"') for b in (first, second)]
    assert sum(received) == n, received  # every message went to exactly one backend
    assert min(received) > n / 10, received  # and both took a real share
    # Birth messages are subscribed unshared, so both backends know the sensor's metadata.
    mosquitto_pub_lines(
        broker.port,
        "moby/workers/s1/status",
        [b'{"schema":"moby.status.v1","online":true,"sensor_type":"vibration","line_id":"L1"}'],
    )
    for b in (first, second):
        wait_until(
            lambda b=b: (
                b.get("/api/v1/sensors?factory_id=workers")["items"][0]["metadata"].get("line_id") == "L1"
            ),
            10,
            what="birth seen by both",
        )
