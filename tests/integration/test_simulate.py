"""`moby simulate` end to end: each injected fault shows downstream, and nothing buffered is lost."""

from __future__ import annotations

import itertools
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from moby.edge.buffer import EdgeBuffer, sensor_key
from moby.edge.faults import MALFORMED_KINDS, OUT_OF_RANGE_VALUE, Fault, FaultPlan, assign
from moby.edge.fleet import SENSOR_TYPES, sensor_id
from moby.edge.simulate import buffer_path
from moby.procs import ManagedProcess
from tests.support import influx_query, wait_until

pytestmark = pytest.mark.integration


def simulator(tmp_path: Path, broker_url: str, factory: str, *args: str, name: str = "sim") -> ManagedProcess:
    return ManagedProcess(
        "moby simulate",
        [sys.executable, "-m", "moby", "simulate", "--factory", factory, *args],
        log_path=tmp_path / f"{name}.log",
        ready=lambda: True,
        env={
            "MOBY_MQTT_URL": broker_url,
            "MOBY_DATA_DIR": str(tmp_path / "sim-data"),
            "MOBY_LOG_FORMAT": "json",
        },
    )


def stop(sim: ManagedProcess, timeout: float = 60, sig: int = signal.SIGTERM) -> dict[str, Any]:
    """SIGTERM (or ``sig``), wait for a clean exit, and return the simulator's own summary."""
    sim.signal(sig)
    assert sim.proc is not None and sim.proc.wait(timeout) == 0, sim.tail()
    for line in reversed(sim.log_path.read_text().splitlines()):
        if '"simulator stopped"' in line:
            summary: dict[str, Any] = orjson.loads(line)
            return summary
    raise AssertionError(f"no summary in the log:\n{sim.tail()}")


def taken(tmp_path: Path, factory: str, sensors: int) -> tuple[dict[str, int], int]:
    """Each sensor's next seq (= readings it ever stored) and the buffer's depth, from its file."""
    path = buffer_path(tmp_path / "sim-data", factory)
    with EdgeBuffer(path, max_bytes=1 << 30, max_age_s=86400) as buffer:
        nexts = {sensor_id(i): buffer.next_seq(sensor_key(factory, sensor_id(i))) for i in range(sensors)}
        return nexts, buffer.depth()


def points(influx_url: str, db: str, factory: str, sensor: str) -> list[dict[str, Any]]:
    res = influx_query(
        influx_url,
        # the sensors' own measurements: the backend also writes moby_sensor_status per sensor
        f"SELECT * FROM /^({'|'.join(SENSOR_TYPES)})$/ "
        f"WHERE factory_id = '{factory}' AND sensor_id = '{sensor}'",
        db,
    )
    out = []
    for series in res[0].get("series", []):
        out.extend(dict(zip(series["columns"], v, strict=True)) for v in series["values"])
    return sorted(out, key=lambda p: p["seq"])


def assert_all_stored(influx_url: str, db: str, factory: str, nexts: dict[str, int]) -> None:
    """Every reading each sensor stored in its buffer is in InfluxDB exactly once: seq 0..n-1."""
    for sensor, n in nexts.items():
        deadline = time.monotonic() + 60
        while (got := [p["seq"] for p in points(influx_url, db, factory, sensor)]) != list(range(n)):
            missing = sorted(set(range(n)) - set(got))
            assert time.monotonic() < deadline, f"{sensor}: {len(missing)} of {n} missing: {missing[:20]}"
            time.sleep(0.5)


def test_faults_show_downstream_and_nothing_is_lost(tmp_path, broker, influxd, make_backend) -> None:
    backend = make_backend(broker, influxd)
    factory = f"sim{uuid.uuid4().hex[:6]}"
    n = 12
    plan = FaultPlan(flatline=1, spike=1, spike_prob=0.3, out_of_range=1, dropout=1, skew_s=-3600, skew=1)
    faults = assign(n, plan, seed=1)
    # fmt: off
    sim = simulator(
        tmp_path, broker.url, factory, "--sensors", str(n), "--rate", "5", "--health-every", "1",
        "--flatline", "1", "--spike", "1", "--spike-prob", "0.3", "--out-of-range", "1", "--dropout", "1",
        "--skew", "-3600", "--skew-sensors", "1", "--malformed-rate", "3",
        "--cut-every", "5", "--cut-for", "2",
    ).start()
    # fmt: on
    time.sleep(14)  # two network cuts
    summary = stop(sim)
    nexts, depth = taken(tmp_path, factory, n)
    assert depth == 0  # drained before it stopped
    assert summary["taken"] == sum(nexts.values()) and summary["cuts"] >= 2

    # network cuts: nothing lost, every sensor's seq contiguous from 0, each reading once
    assert_all_stored(influxd.url, backend.db, factory, nexts)
    by_fault = {f: sensor_id(i) for i, f in enumerate(faults) if f is not None}
    healthy = [sensor_id(i) for i, f in enumerate(faults) if f is None]

    def values(sensor: str) -> list[float]:
        name = {"vib": "rms_velocity", "tem": "temperature", "hum": "humidity", "noi": "laeq"}[sensor[:3]]
        return [p[name] for p in points(influxd.url, backend.db, factory, sensor)]

    assert len(set(values(by_fault[Fault.FLATLINE]))) == 1  # stuck
    assert all(len(set(values(s))) > 1 for s in healthy)
    assert set(values(by_fault[Fault.OUT_OF_RANGE])) == {OUT_OF_RANGE_VALUE}
    spiky = values(by_fault[Fault.SPIKE])
    assert sum(v > 5 * statistics.median(spiky) for v in spiky) >= 3
    # dropout: fewer readings, gaps in time, none in seq (checked above)
    dropout = points(influxd.url, backend.db, factory, by_fault[Fault.DROPOUT])
    assert len(dropout) < 0.8 * min(nexts[s] for s in healthy)
    assert max(b["time"] - a["time"] for a, b in itertools.pairwise(dropout)) >= 400
    # clock skew: its points sit an hour back
    skewed = points(influxd.url, backend.db, factory, by_fault[Fault.SKEW])
    assert abs(skewed[-1]["time"] - (time.time() - 3600) * 1000) < 60_000

    # malformed messages: each dead-lettered by the backend, with its reason
    sent = summary["malformed_sent"]
    assert set(sent) == set(MALFORMED_KINDS)

    def ours() -> list[dict[str, Any]]:
        items = backend.get("/api/v1/dlq?limit=1000")["items"]
        return [i for i in items if i["topic"].startswith(f"moby/{factory}/")]

    wait_until(lambda: len(ours()) == sum(sent.values()), 20, what="dead letters")
    reasons: dict[str, int] = {}
    for item in ours():
        reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
    assert reasons == sent

    # health says which sensor was broken (ground truth) and that the links came back; stop: offline
    sensors = {s["sensor_id"]: s for s in backend.get(f"/api/v1/sensors?factory_id={factory}")["items"]}
    for fault, sensor in by_fault.items():
        assert sensors[sensor]["health"]["simulated_fault"] == fault.value
    assert sensors[healthy[0]]["health"]["reconnects"] >= 1
    assert sensors[healthy[0]]["metadata"]["line_id"] == "line-1"
    assert {s["sensor_id"]: s["reported_online"] for s in sensors.values()} == dict.fromkeys(
        [sensor_id(i) for i in range(n)], False
    )
    # The simulator's connection is a gateway, listed apart, not a sensor.
    gateways = backend.get(f"/api/v1/gateways?factory_id={factory}")["items"]
    assert [(g["gateway_id"], g["online"]) for g in gateways] == [("sim-gw-00", False)]


def test_stop_during_an_outage_keeps_the_backlog_and_a_restart_sends_it(
    tmp_path, own_broker, influxd, make_backend
) -> None:
    backend = make_backend(own_broker, influxd)
    factory = f"sim{uuid.uuid4().hex[:6]}"
    n = 8
    args = ("--sensors", str(n), "--rate", "10", "--drain-timeout", "3")
    sim = simulator(tmp_path, own_broker.url, factory, *args).start()
    wait_until(lambda: backend.stored() > 0, 30, what="first readings stored")

    own_broker.stop()
    time.sleep(4)  # readings pile up in the buffer
    started = time.monotonic()
    summary = stop(sim)
    assert time.monotonic() - started < 15  # the drain gave up after its timeout
    before, depth = taken(tmp_path, factory, n)
    assert depth == summary["left_in_buffer"] > 100  # kept on disk, not dropped

    own_broker.start()
    sim = simulator(tmp_path, own_broker.url, factory, *args, name="sim2").start()
    time.sleep(4)
    summary = stop(sim, sig=signal.SIGINT)  # Ctrl-C drains the same way
    after, depth = taken(tmp_path, factory, n)
    assert depth == 0 and summary["left_in_buffer"] == 0
    assert all(after[s] > before[s] for s in before)  # seq went on from where it was: no reset
    assert_all_stored(influxd.url, backend.db, factory, after)


def test_a_crashed_simulator_shows_as_its_gateways_last_will(tmp_path, broker, influxd, make_backend) -> None:
    backend = make_backend(broker, influxd)
    factory = f"sim{uuid.uuid4().hex[:6]}"
    sim = simulator(tmp_path, broker.url, factory, "--sensors", "6", "--per-connection", "4").start()

    def reported() -> dict[str, bool | None]:
        items = backend.get(f"/api/v1/sensors?factory_id={factory}")["items"]
        return {s["sensor_id"]: s["reported_online"] for s in items}

    def gateways() -> dict[str, bool]:
        items = backend.get(f"/api/v1/gateways?factory_id={factory}")["items"]
        return {g["gateway_id"]: g["online"] for g in items}

    everyone = [sensor_id(i) for i in range(6)]
    wait_until(lambda: reported() == dict.fromkeys(everyone, True), 30, what="births")
    wait_until(lambda: gateways() == {"sim-gw-00": True, "sim-gw-01": True}, 10, what="the gateways' births")
    sim.kill()  # no chance to say goodbye: the broker publishes each gateway's Will
    wait_until(
        lambda: gateways() == {"sim-gw-00": False, "sim-gw-01": False}, 20, what="the gateways' Last Will"
    )
    assert reported() == dict.fromkeys(everyone, True)  # the sensors' own statuses said nothing new
