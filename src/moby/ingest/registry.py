"""What the backend knows of each sensor: identity, birth metadata, online state, last contact.

Filled from retained ``status`` (birth/death, Last Will), ``health`` and telemetry. The
metadata tags it lends to telemetry points are a fixed, bounded set (``line_id``,
``machine_id``) whose values passed the contract's ID pattern, so enrichment cannot blow up
InfluxDB's series cardinality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from moby.schema import Health, Status

ENRICHMENT_TAGS: Final = ("line_id", "machine_id")
# A sensor not heard from (telemetry, health or status) for this long counts as offline even
# when its last status said online: a cut cable does not always trigger the Last Will quickly.
INACTIVITY_S: Final = 300.0

SensorKey = tuple[str, str]  # (factory_id, sensor_id)


@dataclass(slots=True)
class SensorRecord:
    factory_id: str
    sensor_id: str
    sensor_type: str | None = None
    online: bool | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    last_seen_ms: int | None = None
    status_ts_ms: int | None = None
    health: dict[str, Any] | None = None
    readings: int = 0

    def is_online(self, now_ms: int) -> bool:
        """Its last status said online (or none came yet) and it was heard from recently."""
        fresh = self.last_seen_ms is not None and now_ms - self.last_seen_ms <= INACTIVITY_S * 1000
        return bool(self.online) and fresh

    @property
    def tags(self) -> dict[str, str]:
        return {k: v for k in ENRICHMENT_TAGS if isinstance(v := self.metadata.get(k), str)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "factory_id": self.factory_id,
            "sensor_id": self.sensor_id,
            "sensor_type": self.sensor_type,
            "online": self.online,
            "metadata": self.metadata,
            "last_seen_ms": self.last_seen_ms,
            "status_ts_ms": self.status_ts_ms,
            "health": self.health,
            "readings": self.readings,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensorRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Registry:
    """In-memory map of sensors; changed records are handed to the durable store in batches."""

    def __init__(self, records: list[SensorRecord] | None = None) -> None:
        self._sensors: dict[SensorKey, SensorRecord] = {}
        self._dirty: set[SensorKey] = set()
        for record in records or []:
            self._sensors[(record.factory_id, record.sensor_id)] = record

    def get(self, factory_id: str, sensor_id: str) -> SensorRecord | None:
        return self._sensors.get((factory_id, sensor_id))

    def _record(self, factory_id: str, sensor_id: str) -> SensorRecord:
        key = (factory_id, sensor_id)
        record = self._sensors.get(key)
        if record is None:
            record = self._sensors[key] = SensorRecord(factory_id, sensor_id)
        self._dirty.add(key)
        return record

    def saw_telemetry(
        self, factory_id: str, sensor_id: str, sensor_type: str, now_ms: int, readings: int
    ) -> SensorRecord:
        record = self._record(factory_id, sensor_id)
        record.sensor_type = sensor_type
        record.last_seen_ms = now_ms
        record.readings += readings
        if record.online is None:
            record.online = True
        return record

    def saw_status(self, factory_id: str, sensor_id: str, status: Status, now_ms: int) -> bool:
        """Apply a birth/death message; True when the enrichment tags changed."""
        record = self._record(factory_id, sensor_id)
        before = record.tags
        record.online = status.online
        record.status_ts_ms = status.ts if isinstance(status.ts, int) else now_ms
        if status.online:
            record.last_seen_ms = now_ms
            meta = status.model_dump(
                exclude={"schema_", "online", "ts"}, exclude_none=True, exclude_defaults=True
            )
            if meta:
                record.metadata = meta
                record.sensor_type = status.sensor_type or record.sensor_type
        return record.tags != before

    def saw_health(self, factory_id: str, sensor_id: str, health: Health, now_ms: int) -> None:
        record = self._record(factory_id, sensor_id)
        record.last_seen_ms = now_ms
        record.health = health.model_dump(exclude={"schema_"}, exclude_none=True)

    def take_dirty(self) -> list[SensorRecord]:
        dirty = [self._sensors[key] for key in self._dirty]
        self._dirty.clear()
        return dirty

    def all(self) -> list[SensorRecord]:
        return list(self._sensors.values())

    def __len__(self) -> int:
        return len(self._sensors)
