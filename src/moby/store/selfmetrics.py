"""The backend's own metrics, written to InfluxDB like Telegraf's ``internal`` input.

Every ``interval`` seconds the reporter turns the Prometheus registry (the same numbers
``/metrics`` serves) and the sensor registry into points:

* ``moby_internal`` (tag ``client_id``): counters as running totals (``readings_accepted``,
  ``rejected``, ``points_written``, ...; rates are ``non_negative_derivative`` in InfluxQL),
  gauges as they are (``queue_points``, ``dead_letters``, ``sensors_online``, ...), histograms
  as the mean and 95th percentile of the observations *since the previous report*
  (``write_latency_s_mean``, ``e2e_lag_s_p95``, ...), left out when there were none.
* ``moby_internal_rejected`` (tags ``client_id``, ``reason``): field ``messages``, the running
  total of dead-lettered messages per reason (a bounded set of codes).
* ``moby_sensor_status`` (tags ``factory_id``, ``sensor_id``, ``sensor_type``): ``online``
  (1/0, as ``/api/v1/sensors`` says), ``last_seen_age_s`` and ``readings`` — what Grafana's
  fleet panels need, since InfluxDB alone cannot tell a silent sensor from a missing one.
  Incremental: a sensor gets a point in the report after its online state (or type) changed,
  and otherwise every ``status_refresh_s`` (30 s; each sensor on its own phase, so a large
  fleet's refreshes spread over the reports). Gateways get none.

Reporting never holds the event loop for long, whatever the fleet's size: the sensors are
visited :data:`CHUNK` at a time with a yield to the loop between chunks, and their points
written :data:`WRITE_LINES` per request as they are made.

Why directly, not through the durable queue: these points describe the queue and the writer,
so they must not wait behind (or add to) an ingest backlog, and losing a few while InfluxDB is
away is acceptable for monitoring (Telegraf drops them too). The reporter has its own HTTP
client with a short timeout and keeps at most ``max_pending_lines`` unsent ``moby_internal*``
lines (oldest go first); a sensor's point that could not be written is simply made again in the
next report (its state was not marked written), so a slow or absent InfluxDB can neither block
ingest nor grow memory. Every field is
a float, so a counter that happens to be whole never clashes with the field's type in a shard.
All three measurements live in the default (``raw``) policy, so the rollup continuous queries
pick them up like any sensor measurement and long-range health panels read ``rollup_1m``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import structlog
from prometheus_client import CollectorRegistry

from moby.ingest.lineproto import LineProtocolError, encode_fields, series_key
from moby.ingest.registry import Registry, SensorKey, SensorRecord
from moby.store.influx import InfluxClient, InfluxError

log = structlog.get_logger(__name__)

INTERNAL: Final = "moby_internal"
REJECTED: Final = "moby_internal_rejected"
SENSOR_STATUS: Final = "moby_sensor_status"
CHUNK: Final = 250  # sensors visited between two yields to the event loop (~2.5 ms of work)
WRITE_LINES: Final = 5000  # lines per write request

# Prometheus sample name → field of moby_internal (labels summed).
_TOTALS: Final[Mapping[str, str]] = {
    "moby_messages_received_total": "messages_received",
    "moby_readings_accepted_total": "readings_accepted",
    "moby_messages_rejected_total": "rejected",
    "moby_points_written_total": "points_written",
    "moby_write_errors_total": "write_errors",
    "moby_mqtt_reconnects_total": "mqtt_reconnects",
    "moby_dead_letters": "dead_letters",
    "moby_dead_letters_evicted": "dead_letters_evicted",
    "moby_queue_depth_points": "queue_points",
    "moby_queue_depth_bytes": "queue_bytes",
    "moby_queue_full": "queue_full",
    "moby_mqtt_connected": "mqtt_connected",
    "moby_influx_up": "influx_up",
    "moby_sensors": "sensors",
    "moby_cardinality_rejected_total": "cardinality_rejected",
    "moby_storage_error": "storage_error",
}
# Histogram family → field prefix.
_HISTOGRAMS: Final[Mapping[str, str]] = {
    "moby_write_latency_seconds": "write_latency_s",
    "moby_write_batch_points": "batch_points",
    "moby_end_to_end_lag_seconds": "e2e_lag_s",
    "moby_group_commit_messages": "commit_messages",
}

Labels = tuple[tuple[str, str], ...]


def _samples(registry: CollectorRegistry) -> dict[str, list[tuple[Labels, float]]]:
    out: dict[str, list[tuple[Labels, float]]] = {}
    for family in registry.collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((tuple(sorted(s.labels.items())), float(s.value)))
    return out


def _status_line(record: SensorRecord, online: bool, now_ms: int) -> str | None:
    tags = {"factory_id": record.factory_id, "sensor_id": record.sensor_id}
    if record.sensor_type:
        tags["sensor_type"] = record.sensor_type
    status = [("online", 1.0 if online else 0.0), ("readings", float(record.readings))]
    if record.last_seen_ms is not None:
        status.append(("last_seen_age_s", max(0.0, (now_ms - record.last_seen_ms) / 1000)))
    try:
        return f"{series_key(SENSOR_STATUS, tags)} {encode_fields(sorted(status))} {now_ms}"
    except LineProtocolError:  # IDs passed the contract's pattern; this is belt and braces
        return None


def quantile_from_buckets(buckets: Iterable[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` of cumulative (le, count) pairs."""
    pairs = sorted(buckets)
    total = pairs[-1][1] if pairs else 0.0
    if total <= 0:
        return None
    for le, count in pairs:
        if count >= q * total:
            # The +Inf bucket has no bound: report the largest finite one instead.
            return le if le != float("inf") else max((b for b, _ in pairs if b != float("inf")), default=None)
    return None


class SelfMetricsReporter:
    def __init__(
        self,
        registry: CollectorRegistry,
        sensors: Registry,
        client: InfluxClient,
        *,
        client_id: str,
        interval_s: float = 10.0,
        before_collect: Callable[[], None] | None = None,
        max_pending_lines: int = 20_000,
        status_refresh_s: float = 30.0,
    ) -> None:
        self._registry = registry
        self._sensors = sensors
        self._client = client
        self._client_id = client_id
        self._interval = interval_s
        self._before_collect = before_collect
        self._pending: deque[str] = deque(maxlen=max_pending_lines)
        self._last_hist: dict[str, dict[str, float]] = {}
        self._refresh_ms = int(status_refresh_s * 1000)
        # Per sensor: the (online, sensor_type) of its last written point, and when the next one
        # is due regardless.
        self._written: dict[SensorKey, tuple[tuple[bool, str | None], int]] = {}
        self._task: asyncio.Task[None] | None = None
        self.reports = 0  # reports InfluxDB confirmed

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._loop(), name="self-metrics")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.report(int(time.time() * 1000))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # monitoring must never take the backend down
                log.warning("self-metrics report failed", error=str(exc)[:200], pending=len(self._pending))

    async def report(self, now_ms: int) -> None:
        """One report: the sensors' points that are due, then the backend's own."""
        if self._before_collect is not None:
            self._before_collect()
        records = self._sensors.all()  # a snapshot: the registry changes while we yield
        online = 0
        lines: list[str] = []
        states: list[tuple[SensorKey, tuple[bool, str | None]]] = []
        writable = True
        for start in range(0, len(records), CHUNK):
            for record in records[start : start + CHUNK]:
                if record.gateway:
                    continue
                is_online = record.is_online(now_ms)
                online += is_online
                key = (record.factory_id, record.sensor_id)
                state = (is_online, record.sensor_type)
                written = self._written.get(key)
                if written is not None and written[0] == state and now_ms < written[1]:
                    continue
                line = _status_line(record, is_online, now_ms)
                if line is not None:
                    lines.append(line)
                    states.append((key, state))
            if len(lines) >= WRITE_LINES:
                writable = writable and await self._write_status(lines, states, now_ms)
                lines, states = [], []
            await asyncio.sleep(0)
        if lines and writable:
            await self._write_status(lines, states, now_ms)
        self._pending.extend(self.collect(now_ms, online))
        await self.flush()

    async def _write_status(
        self, lines: list[str], states: list[tuple[SensorKey, tuple[bool, str | None]]], now_ms: int
    ) -> bool:
        """Write sensors' points; mark them written (True) or leave them for the next report."""
        try:
            await self._client.write(("\n".join(lines) + "\n").encode())
        except (InfluxError, OSError) as exc:
            log.info("sensor status points not written; made again next report", error=str(exc)[:200])
            return False
        refresh, written = self._refresh_ms, self._written
        for key, state in states:
            # A sensor's first refresh comes at a phase of its own, spreading a fleet's
            # refreshes over the reports instead of all of them in one.
            due = now_ms + refresh if key in written else now_ms + hash(key) % refresh + 1
            written[key] = (state, due)
        return True

    async def flush(self) -> None:
        if not self._pending:
            return
        lines = list(self._pending)
        try:
            await self._client.write(("\n".join(lines) + "\n").encode())
        except (InfluxError, OSError) as exc:
            log.info("self-metrics not written; kept for the next report", error=str(exc)[:200])
            return
        for _ in lines:
            self._pending.popleft()
        self.reports += 1

    def collect(self, now_ms: int, sensors_online: int) -> list[str]:
        """The ``moby_internal`` and ``moby_internal_rejected`` lines of one report (ms)."""
        samples = _samples(self._registry)
        fields: dict[str, float] = {}
        for name, field in _TOTALS.items():
            if name in samples:
                fields[field] = sum(v for _, v in samples[name])
        for labels, value in samples.get("moby_messages_received_total", []):
            fields[f"received_{dict(labels).get('kind', 'other')}"] = value
        for family, prefix in _HISTOGRAMS.items():
            fields.update(self._histogram_fields(samples, family, prefix))
        fields["sensors_online"] = float(sensors_online)
        me = {"client_id": self._client_id}
        lines = [f"{series_key(INTERNAL, me)} {encode_fields(sorted(fields.items()))} {now_ms}"]
        for labels, value in samples.get("moby_messages_rejected_total", []):
            tags = {**me, "reason": dict(labels).get("reason", "unknown")}
            lines.append(f"{series_key(REJECTED, tags)} messages={value!r} {now_ms}")
        return lines

    def _histogram_fields(
        self, samples: Mapping[str, list[tuple[Labels, float]]], family: str, prefix: str
    ) -> dict[str, float]:
        """Mean and p95 of what was observed since the previous report."""
        now = {"count": sum(v for _, v in samples.get(f"{family}_count", []))}
        now["sum"] = sum(v for _, v in samples.get(f"{family}_sum", []))
        for labels, value in samples.get(f"{family}_bucket", []):
            now[dict(labels)["le"]] = now.get(dict(labels)["le"], 0.0) + value
        before = self._last_hist.get(family, {})
        self._last_hist[family] = now
        delta = {k: v - before.get(k, 0.0) for k, v in now.items()}
        if delta["count"] <= 0:
            return {}
        buckets = [(float(k), v) for k, v in delta.items() if k not in ("count", "sum")]
        out = {f"{prefix}_mean": delta["sum"] / delta["count"]}
        p95 = quantile_from_buckets(buckets, 0.95)
        if p95 is not None:
            out[f"{prefix}_p95"] = p95
        return out
