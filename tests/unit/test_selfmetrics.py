"""The backend's own metrics as InfluxDB points: fields, per-interval histograms, never blocking."""

from __future__ import annotations

import asyncio
import gc
import time

from moby.ingest.registry import Registry, SensorRecord
from moby.metrics import Metrics
from moby.procs import free_port
from moby.schema import STATUS, Status
from moby.store.influx import InfluxClient, InfluxError
from moby.store.selfmetrics import SelfMetricsReporter, quantile_from_buckets


def reporter(metrics: Metrics, registry: Registry, **kw: object) -> SelfMetricsReporter:
    client = InfluxClient(f"http://127.0.0.1:{free_port()}", "moby", timeout_s=1)
    return SelfMetricsReporter(metrics.registry, registry, client, client_id="b1", **kw)  # type: ignore[arg-type]


class Recorder:
    """Stands in for the InfluxDB client: keeps every body written (or refuses, when down)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.down = False

    async def write(self, body: bytes) -> None:
        if self.down:
            raise InfluxError("down")
        self.bodies.append(body)

    async def close(self) -> None:
        pass

    def lines(self) -> list[str]:
        out = [line for body in self.bodies for line in body.decode().splitlines()]
        self.bodies.clear()
        return out


def recording(metrics: Metrics, registry: Registry, **kw: object) -> tuple[SelfMetricsReporter, Recorder]:
    client = Recorder()
    r = SelfMetricsReporter(metrics.registry, registry, client, client_id="b1", **kw)  # type: ignore[arg-type]
    return r, client


def fields_of(line: str) -> dict[str, float]:
    _, fields, _ = line.split(" ")
    return {k: float(v) for k, v in (f.split("=") for f in fields.split(","))}


def status_lines(lines: list[str]) -> list[str]:
    return sorted(line for line in lines if line.startswith("moby_sensor_status"))


def test_quantile_from_cumulative_buckets() -> None:
    buckets = [(0.01, 10.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile_from_buckets(buckets, 0.5) == 0.1
    assert quantile_from_buckets(buckets, 0.95) == 1.0
    assert quantile_from_buckets([(1.0, 0.0), (float("inf"), 0.0)], 0.95) is None
    # Beyond the largest finite bound: report that bound, not infinity.
    assert quantile_from_buckets([(1.0, 0.0), (float("inf"), 5.0)], 0.95) == 1.0


async def test_a_report() -> None:
    m = Metrics()
    registry = Registry([SensorRecord("f1", "s1", "vibration", online=True, last_seen_ms=1_000_000)])
    registry.saw_telemetry("f1", "s2", "noise", 0, 1)  # last seen long ago: offline
    m.readings_accepted.inc(7)
    m.messages_received.labels("telemetry").inc(5)
    m.messages_rejected.labels("invalid_json").inc(2)
    m.cardinality_rejected.labels("sensor_type").inc(4)
    m.storage_error.set(1)
    m.queue_points.set(3)
    m.write_latency.observe(0.02)
    m.write_latency.observe(0.04)
    r, client = recording(m, registry)
    await r.report(1_010_000)
    lines = client.lines()
    internal = fields_of(next(line for line in lines if line.startswith("moby_internal,")))
    assert "moby_internal,client_id=b1 " in lines[-2] and lines[-2].endswith(" 1010000")
    assert internal["readings_accepted"] == 7.0 and internal["received_telemetry"] == 5.0
    assert internal["rejected"] == 2.0 and internal["queue_points"] == 3.0
    assert internal["cardinality_rejected"] == 4.0 and internal["storage_error"] == 1.0
    assert internal["sensors_online"] == 1.0
    assert abs(internal["write_latency_s_mean"] - 0.03) < 1e-9 and internal["write_latency_s_p95"] == 0.05
    assert "moby_internal_rejected,client_id=b1,reason=invalid_json messages=2.0 1010000" in lines
    status = status_lines(lines)
    assert status[0].startswith("moby_sensor_status,factory_id=f1,sensor_id=s1,sensor_type=vibration ")
    assert fields_of(status[0]) == {"last_seen_age_s": 10.0, "online": 1.0, "readings": 0.0}
    assert fields_of(status[1])["online"] == 0.0
    # The next report has no new write observations: no latency fields rather than stale ones.
    again = fields_of(r.collect(1_020_000, 1)[0])
    assert "write_latency_s_mean" not in again
    m.write_latency.observe(2.0)
    assert fields_of(r.collect(1_030_000, 1)[0])["write_latency_s_mean"] == 2.0


async def test_sensor_points_are_written_on_change_and_refreshed_on_a_phase_of_their_own() -> None:
    registry = Registry()
    for i in range(100):
        registry.saw_telemetry("f1", f"s{i}", "vibration", 1_000_000, 1)
    r, client = recording(Metrics(), registry, status_refresh_s=30)
    await r.report(1_000_000)
    assert len(status_lines(client.lines())) == 100  # every sensor once, at first
    # A change is reported at once, whatever the sensor's phase.
    registry.saw_status("f1", "s7", _offline(), 1_000_500)
    await r.report(1_001_000)
    changed = [line for line in status_lines(client.lines()) if "sensor_id=s7," in line]
    assert len(changed) == 1 and fields_of(changed[0])["online"] == 0.0
    # Otherwise every sensor gets a point again within one refresh period, spread over the reports.
    per_report = []
    for t in range(1_011_000, 1_041_000, 10_000):
        await r.report(t)
        per_report.append(len(status_lines(client.lines())))
    assert sum(per_report) >= 99
    assert max(per_report) < 90, per_report


async def test_gateways_are_not_sensors() -> None:
    registry = Registry()
    registry.saw_status("f1", "sim-gw-00", _birth(gateway=True), 1_000_000)
    registry.saw_telemetry("f1", "s1", "vibration", 1_000_000, 1)
    r, client = recording(Metrics(), registry)
    await r.report(1_000_000)
    lines = client.lines()
    assert [line.split(" ")[0] for line in status_lines(lines)] == [
        "moby_sensor_status,factory_id=f1,sensor_id=s1,sensor_type=vibration"
    ]
    assert (
        fields_of(next(line for line in lines if line.startswith("moby_internal,")))["sensors_online"] == 1.0
    )
    assert registry.sensor_count == 1 and len(registry) == 2


async def test_points_that_could_not_be_written_are_made_again() -> None:
    registry = Registry()
    registry.saw_telemetry("f1", "s1", "vibration", 1_000_000, 1)
    r, client = recording(Metrics(), registry)
    client.down = True
    await r.report(1_000_000)
    client.down = False
    await r.report(1_001_000)
    lines = client.lines()
    assert len(status_lines(lines)) == 1
    # The unsent moby_internal point of the first report went with the second.
    assert sum(line.startswith("moby_internal,") for line in lines) == 2


async def test_reporting_a_large_fleet_never_blocks_the_event_loop_long() -> None:
    """100,000 sensors: the loop is given back every chunk; no gap of the ticker holds more than
    50 ms of this thread's CPU time (CPU time, not wall time: the machine may preempt us)."""
    registry = Registry(max_sensors=100_000, max_sensors_per_factory=100_000)
    now_ms = int(time.time() * 1000)
    for i in range(100_000):
        registry.saw_telemetry(f"f{i % 10}", f"s{i}", "vibration", now_ms - (i % 600) * 1000, 1)
    # The bound is on this code's work between two yields. A collection of the whole heap is
    # the interpreter's and could fall anywhere: keep the fleet just made out of it.
    gc.collect()
    gc.freeze()
    r, client = recording(Metrics(), registry)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.thread_time()
        while not done.is_set():
            await asyncio.sleep(0)
            now = time.thread_time()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await r.report(now_ms)
    await r.report(now_ms + 10_000)
    done.set()
    await tick
    gc.unfreeze()
    assert len(status_lines(client.lines())) >= 100_000  # every sensor's point, none dropped
    assert len(gaps) > 100
    assert max(gaps) < 0.05, f"the event loop was held for {max(gaps) * 1000:.0f} ms of CPU"


async def test_an_absent_influxdb_costs_a_bounded_buffer_and_no_exception() -> None:
    m = Metrics()
    r = reporter(m, Registry(), interval_s=0.01, max_pending_lines=5)
    r.start()
    await asyncio.sleep(0.3)
    assert r.reports == 0
    assert 0 < len(r._pending) <= 5
    await r.stop()


def _offline() -> Status:
    return STATUS.validate_python({"schema": "moby.status.v1", "online": False})


def _birth(**fields: object) -> Status:
    return STATUS.validate_python({"schema": "moby.status.v1", "online": True, **fields})
