"""The edge agent end to end: buffer through a broker outage and an agent kill, lose nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moby.edge.buffer import EdgeBuffer, sensor_key
from moby.procs import ManagedProcess
from tests.support import influx_query, wait_until

pytestmark = pytest.mark.integration

SENSORS = ("temp-1", "hum-1")


def agent_process(tmp_path: Path, broker_url: str) -> ManagedProcess:
    config = tmp_path / "edge.toml"
    config.write_text(
        f"""
factory_id = "f1"
brokers = ["{broker_url}"]
buffer_path = "{tmp_path / "edge-buffer.sqlite"}"
health_every_s = 1.0
replay_rate = 2000.0

[[sensors]]
sensor_id = "temp-1"
type = "temperature"
interval_s = 0.05
line_id = "L1"
machine_id = "M1"

[[sensors]]
sensor_id = "hum-1"
type = "humidity"
interval_s = 0.05
"""
    )
    return ManagedProcess(
        "moby edge",
        [sys.executable, "-m", "moby", "edge", "--config", str(config)],
        log_path=tmp_path / "edge.log",
        ready=lambda: True,
    )


def seqs(influxd_url: str, db: str, sensor: str) -> list[int]:
    res = influx_query(influxd_url, f"SELECT seq FROM /.*/ WHERE sensor_id = '{sensor}'", db)
    return sorted(v[1] for s in res[0].get("series", []) for v in s["values"])


def test_broker_outage_and_agent_restart_lose_nothing(tmp_path, own_broker, influxd, make_backend) -> None:
    backend = make_backend(own_broker, influxd)
    agent = agent_process(tmp_path, own_broker.url).start()
    wait_until(
        lambda: all(seqs(influxd.url, backend.db, s) for s in SENSORS), 30, what="first readings stored"
    )

    own_broker.stop()  # a 60 s outage: readings keep landing in the on-device buffer
    time.sleep(30)
    agent.kill()  # and the agent dies in the middle of it
    agent = agent_process(tmp_path, own_broker.url).start()
    time.sleep(30)
    own_broker.start()

    time.sleep(10)  # the links come back (backoff ≤ 5 s); live data and the replayed backlog flow
    agent.signal(signal.SIGTERM)
    assert agent.proc is not None and agent.proc.wait(30) == 0

    # Every reading the agent ever took got a seq from its buffer; all of them must be stored.
    with EdgeBuffer(tmp_path / "edge-buffer.sqlite", max_bytes=1 << 30, max_age_s=86400) as buffer:
        taken = {s: buffer.next_seq(sensor_key("f1", s)) for s in SENSORS}
        assert buffer.depth() == 0  # nothing left behind on the device
    for sensor in SENSORS:
        deadline = time.monotonic() + 60
        while (got := seqs(influxd.url, backend.db, sensor)) != list(range(taken[sensor])):
            missing = sorted(set(range(taken[sensor])) - set(got))
            assert time.monotonic() < deadline, (
                f"{sensor}: {len(missing)} of {taken[sensor]} missing: {missing[:20]}"
            )
            time.sleep(0.5)
        assert taken[sensor] > 1000  # ~20 readings/s for ~70 s, through the outage and the restart
    # a clean stop leaves the sensors offline, with their birth metadata kept
    wait_until(
        lambda: (
            {s["sensor_id"]: s["online"] for s in backend.get("/api/v1/sensors")["items"]}
            == dict.fromkeys(SENSORS, False)
        ),
        20,
        what="offline status",
    )
    temp = next(s for s in backend.get("/api/v1/sensors")["items"] if s["sensor_id"] == "temp-1")
    assert temp["metadata"]["line_id"] == "L1"


def test_commands_over_qos2(tmp_path, broker, influxd, make_backend) -> None:
    backend = make_backend(broker, influxd)
    agent = agent_process(tmp_path, broker.url).start()

    def health(sensor: str) -> dict:
        items = {s["sensor_id"]: s for s in backend.get("/api/v1/sensors")["items"]}
        return (items.get(sensor) or {}).get("health") or {}

    wait_until(lambda: health("temp-1").get("interval_s") == 0.05, 30, what="first health report")

    def command(payload: str) -> None:
        subprocess.run(
            ["mosquitto_pub", "-p", str(broker.port), "-q", "2", "-t", "moby/f1/temp-1/cmd", "-m", payload],
            check=True,
            timeout=10,
        )

    command('{"cmd": "ping", "id": 42}')
    wait_until(lambda: health("temp-1").get("pong") == 42, 10, what="pong")
    command('{"cmd": "set_interval", "interval_s": 0.5}')
    wait_until(lambda: health("temp-1").get("interval_s") == 0.5, 10, what="new interval applied")
    command('{"cmd": "self_destruct"}')
    command("not json")
    wait_until(
        lambda: health("temp-1").get("errors", {}).get("bad_command") == 2, 10, what="bad commands counted"
    )
    assert health("hum-1").get("interval_s") == 0.05  # commands reach only their own sensor
    agent.stop()
