"""Response models of the HTTP API: they are what ``/docs`` shows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    ready: bool
    mqtt: bool = Field(description="connected to the broker")
    influx: bool = Field(
        description="InfluxDB answered /ping within the last second and no write is failing "
        "(after an outage this turns true with the writer's next successful retry)"
    )
    queue_full: bool = Field(description="the durable queue is at its byte bound")
    storage: bool = Field(
        default=True,
        description="the data dir accepts writes; false while group commits fail (disk full, "
        "I/O error), when nothing is acknowledged to the broker",
    )
    reasons: list[str] = Field(
        default_factory=list, description="why the backend is not ready, one line per cause"
    )
    tasks_down: list[str] = Field(
        default_factory=list,
        description="long-running tasks that failed and wait for their restart (not ready meanwhile)",
    )


class Sensor(BaseModel):
    factory_id: str
    sensor_id: str
    sensor_type: str | None = Field(description="from telemetry, or the birth message")
    online: bool = Field(
        description="heard from (telemetry, health or an online status) within the inactivity "
        "timeout (5 minutes), and the last thing heard was not an offline status (Last Will or "
        "clean stop); telemetry or health after an offline status makes it true again, whatever "
        "the retained status still says"
    )
    reported_online: bool | None = Field(description="what the last status message said")
    last_seen: str | None = Field(description="RFC 3339 time of the last message of any kind")
    metadata: dict[str, Any] = Field(
        description="birth metadata: model, firmware, line_id, machine_id, units"
    )
    health: dict[str, Any] | None = Field(description="the last health report")
    readings: int = Field(description="readings received since the backend first saw the sensor")


class SensorList(BaseModel):
    total: int = Field(description="sensors matching the filters, on every page")
    items: list[Sensor]
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last page"
    )


class Gateway(BaseModel):
    factory_id: str
    gateway_id: str
    online: bool = Field(description="as for a sensor")
    last_seen: str | None
    metadata: dict[str, Any] = Field(description="the gateway's birth metadata")


class GatewayList(BaseModel):
    total: int
    items: list[Gateway]


class Readings(BaseModel):
    factory_id: str
    sensor_id: str
    measurement: str
    resolution: str = Field(
        description="the resolution read, named by its retention policy: raw, rollup_1m or rollup_1h",
        examples=["raw"],
    )
    policy: str = Field(description="the InfluxDB retention policy read (the same as resolution)")
    interval_ms: int | None = Field(
        description="the time between points: the averaging bucket when max_points asked for one, "
        "else the policy's own step (60000 for rollup_1m); null for raw as stored"
    )
    fields: list[str] = Field(description="the value names in the points, the same at every resolution")
    points: list[dict[str, Any]] = Field(description="time (RFC 3339) and one key per field")


class Latest(BaseModel):
    factory_id: str
    sensor_id: str
    measurement: str
    time: str = Field(description="RFC 3339 time of the sensor's newest reading in raw")
    seq: int | None = Field(description="its sequence number")
    values: dict[str, float] = Field(description="its numeric values, by name (units: the birth metadata)")


class LatestList(BaseModel):
    window_s: int = Field(description="how far back a reading is looked for: older sensors are not listed")
    items: list[Latest]


class DeadLetterItem(BaseModel):
    received_at: str
    topic: str
    reason: str = Field(description="a reason code: invalid_json, invalid_schema, ...")
    detail: str = Field(description="what exactly was wrong")
    payload: str = Field(description="the raw payload (invalid UTF-8 shown as \\x escapes)")


class DeadLetters(BaseModel):
    total: int = Field(description="dead letters held (the store is bounded by count and bytes)")
    evicted: int = Field(description="dead letters evicted, oldest first, to keep the bounds")
    bytes: int = Field(description="bytes the held dead letters count for against MOBY_DLQ_MAX_BYTES")
    items: list[DeadLetterItem]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next (older) page; null when there is none"
    )
