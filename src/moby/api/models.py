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
    tasks_down: list[str] = Field(
        default_factory=list,
        description="long-running tasks that failed and wait for their restart (not ready meanwhile)",
    )


class Sensor(BaseModel):
    factory_id: str
    sensor_id: str
    sensor_type: str | None = Field(description="from telemetry, or the birth message")
    online: bool = Field(
        description="the sensor's last status said online (birth) and it was heard from within "
        "the inactivity timeout; a Last Will or offline status makes it false"
    )
    reported_online: bool | None = Field(description="what the last status message said")
    last_seen: str | None = Field(description="RFC 3339 time of the last message of any kind")
    metadata: dict[str, Any] = Field(
        description="birth metadata: model, firmware, line_id, machine_id, units"
    )
    health: dict[str, Any] | None = Field(description="the last health report")
    readings: int = Field(description="readings received since the backend first saw the sensor")


class SensorList(BaseModel):
    total: int
    items: list[Sensor]


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


class DeadLetterItem(BaseModel):
    received_at: str
    topic: str
    reason: str = Field(description="a reason code: invalid_json, invalid_schema, ...")
    detail: str = Field(description="what exactly was wrong")
    payload: str = Field(description="the raw payload (invalid UTF-8 shown as \\x escapes)")


class DeadLetters(BaseModel):
    total: int = Field(description="dead letters held (the store is bounded)")
    evicted: int = Field(description="dead letters evicted, oldest first, to keep the bound")
    items: list[DeadLetterItem]
