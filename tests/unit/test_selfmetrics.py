"""The backend's own metrics as InfluxDB points: fields, per-interval histograms, never blocking."""

from __future__ import annotations

import asyncio

from moby.ingest.registry import Registry, SensorRecord
from moby.metrics import Metrics
from moby.procs import free_port
from moby.store.influx import InfluxClient
from moby.store.selfmetrics import SelfMetricsReporter, quantile_from_buckets


def reporter(metrics: Metrics, registry: Registry, **kw: object) -> SelfMetricsReporter:
    client = InfluxClient(f"http://127.0.0.1:{free_port()}", "moby", timeout_s=1)
    return SelfMetricsReporter(metrics.registry, registry, client, client_id="b1", **kw)  # type: ignore[arg-type]


def fields_of(line: str) -> dict[str, float]:
    _, fields, _ = line.split(" ")
    return {k: float(v) for k, v in (f.split("=") for f in fields.split(","))}


def test_quantile_from_cumulative_buckets() -> None:
    buckets = [(0.01, 10.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile_from_buckets(buckets, 0.5) == 0.1
    assert quantile_from_buckets(buckets, 0.95) == 1.0
    assert quantile_from_buckets([(1.0, 0.0), (float("inf"), 0.0)], 0.95) is None
    # Beyond the largest finite bound: report that bound, not infinity.
    assert quantile_from_buckets([(1.0, 0.0), (float("inf"), 5.0)], 0.95) == 1.0


def test_a_report() -> None:
    m = Metrics()
    registry = Registry([SensorRecord("f1", "s1", "vibration", online=True, last_seen_ms=1_000_000)])
    registry.saw_telemetry("f1", "s2", "noise", 0, 1)  # last seen long ago: offline
    m.readings_accepted.inc(7)
    m.messages_received.labels("telemetry").inc(5)
    m.messages_rejected.labels("invalid_json").inc(2)
    m.queue_points.set(3)
    m.write_latency.observe(0.02)
    m.write_latency.observe(0.04)
    r = reporter(m, registry)
    lines = r.collect(1_010_000)
    internal = fields_of(lines[0])
    assert lines[0].startswith("moby_internal,client_id=b1 ") and lines[0].endswith(" 1010000")
    assert internal["readings_accepted"] == 7.0 and internal["received_telemetry"] == 5.0
    assert internal["rejected"] == 2.0 and internal["queue_points"] == 3.0
    assert internal["sensors_online"] == 1.0
    assert abs(internal["write_latency_s_mean"] - 0.03) < 1e-9 and internal["write_latency_s_p95"] == 0.05
    assert "moby_internal_rejected,client_id=b1,reason=invalid_json messages=2.0 1010000" in lines
    status = sorted(line for line in lines if line.startswith("moby_sensor_status"))
    assert status[0].startswith("moby_sensor_status,factory_id=f1,sensor_id=s1,sensor_type=vibration ")
    assert fields_of(status[0]) == {"last_seen_age_s": 10.0, "online": 1.0, "readings": 0.0}
    assert fields_of(status[1])["online"] == 0.0
    # The next report has no new write observations: no latency fields rather than stale ones.
    again = fields_of(r.collect(1_020_000)[0])
    assert "write_latency_s_mean" not in again
    m.write_latency.observe(2.0)
    assert fields_of(r.collect(1_030_000)[0])["write_latency_s_mean"] == 2.0


async def test_an_absent_influxdb_costs_a_bounded_buffer_and_no_exception() -> None:
    m = Metrics()
    r = reporter(m, Registry(), interval_s=0.01, max_pending_lines=5)
    r.start()
    await asyncio.sleep(0.3)
    assert r.reports == 0
    assert 0 < len(r._pending) <= 5
    await r.stop()
