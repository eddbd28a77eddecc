"""What the backend knows of each sensor: identity, birth metadata, online state, last contact.

Filled from retained ``status`` (birth/death, Last Will), ``health`` and telemetry. The
metadata tags it lends to telemetry points are a fixed, bounded set (``line_id``,
``machine_id``) whose values passed the contract's ID pattern, so enrichment cannot blow up
InfluxDB's series cardinality.

Bounded, because every entry is made by a publisher: at most ``max_sensors`` records in all,
``max_factories`` factories and ``max_sensors_per_factory`` per factory (a message that would
make one more is refused by the caller, see :meth:`Registry.admit`); each record holds only
contract fields with bounded sizes, and of a health report's fields beyond the contract at most
:data:`HEALTH_EXTRA_FIELDS` scalars (strings cut to :data:`HEALTH_EXTRA_CHARS`). The value names
each measurement has (its InfluxDB fields) are bounded too, by ``max_fields_per_measurement``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from moby.schema import Health, Status

ENRICHMENT_TAGS: Final = ("line_id", "machine_id")
# A sensor not heard from (telemetry, health or status) for this long counts as offline even
# when its last status said online: a cut cable does not always trigger the Last Will quickly.
INACTIVITY_S: Final = 300.0
# What is kept of a health report's fields beyond the contract's (a sensor may add its own).
HEALTH_EXTRA_FIELDS: Final = 16
HEALTH_EXTRA_CHARS: Final = 64
_HEALTH_FIELDS: Final = frozenset(Health.model_fields) | {"schema"}

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
    # The last thing heard from it was an offline status (Last Will or clean stop); telemetry or
    # health after it clears this, whatever the (retained, possibly old) status says.
    stopped: bool = False
    # A connection that carries other sensors' messages, not a sensor (its birth says so).
    gateway: bool = False

    def is_online(self, now_ms: int) -> bool:
        """Heard from within the inactivity timeout, and not last heard saying it went offline."""
        fresh = self.last_seen_ms is not None and now_ms - self.last_seen_ms <= INACTIVITY_S * 1000
        return fresh and not self.stopped

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
            "stopped": self.stopped,
            "gateway": self.gateway,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensorRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "stopped" not in known:  # saved by a version that knew only the status's word
            known["stopped"] = known.get("online") is False
        return cls(**known)


def bounded_health(health: Health) -> dict[str, Any]:
    """The contract's fields of a health report, plus at most a few short scalar extras."""
    extra = health.model_extra or {}
    kept = health.model_dump(exclude={"schema_", *extra}, exclude_none=True)
    extras = 0
    for name, value in extra.items():
        if extras >= HEALTH_EXTRA_FIELDS:
            break
        if len(name) > HEALTH_EXTRA_CHARS or name in _HEALTH_FIELDS:
            continue
        if isinstance(value, str):
            value = value[:HEALTH_EXTRA_CHARS]
        elif isinstance(value, float) and not math.isfinite(value):
            continue
        elif not isinstance(value, bool | int | float):
            continue  # objects, arrays and nulls are not kept
        kept[name] = value
        extras += 1
    return kept


class Registry:
    """In-memory map of sensors; changed records are handed to the durable store in batches."""

    def __init__(
        self,
        records: Iterable[SensorRecord] = (),
        *,
        fields: Iterable[tuple[str, str]] = (),
        max_sensors: int = 100_000,
        max_factories: int = 1_000,
        max_sensors_per_factory: int = 10_000,
        max_fields_per_measurement: int = 200,
    ) -> None:
        self.max_sensors = max_sensors
        self.max_factories = max_factories
        self.max_sensors_per_factory = max_sensors_per_factory
        self.max_fields_per_measurement = max_fields_per_measurement
        self._sensors: dict[SensorKey, SensorRecord] = {}
        self._dirty: set[SensorKey] = set()
        self._per_factory: dict[str, int] = {}
        self._gateways = 0
        for record in records:  # what was saved is kept, even past budgets lowered since
            key = (record.factory_id, record.sensor_id)
            if key not in self._sensors:
                self._per_factory[record.factory_id] = self._per_factory.get(record.factory_id, 0) + 1
                self._gateways += record.gateway
            self._sensors[key] = record
        # Keys in (factory_id, sensor_id) order, for stable pages of /api/v1/sensors; keys made
        # since the last page wait in _new (sorting a sorted list plus a short tail is cheap).
        self._order: list[SensorKey] = sorted(self._sensors)
        self._new: list[SensorKey] = []
        self._fields: dict[str, set[str]] = {}
        for measurement, name in fields:
            self._fields.setdefault(measurement, set()).add(name)
        self._dirty_fields: list[tuple[str, str]] = []

    # -- budgets -------------------------------------------------------------------------------
    def admit(self, factory_id: str, sensor_id: str) -> tuple[str, str] | None:
        """None when a record for this sensor exists or may be made; else the budget it would
        pass (``sensors``, ``factories`` or ``sensors_per_factory``) and a sentence saying so."""
        if (factory_id, sensor_id) in self._sensors:
            return None
        if len(self._sensors) >= self.max_sensors:
            return "sensors", (
                f"new sensor {factory_id}/{sensor_id}: the backend already tracks "
                f"{len(self._sensors)} sensors (MOBY_MAX_SENSORS)"
            )
        in_factory = self._per_factory.get(factory_id)
        if in_factory is None:
            if len(self._per_factory) >= self.max_factories:
                return "factories", (
                    f"new factory {factory_id!r}: {len(self._per_factory)} factories are known "
                    "already (MOBY_MAX_FACTORIES)"
                )
        elif in_factory >= self.max_sensors_per_factory:
            return "sensors_per_factory", (
                f"new sensor {sensor_id!r}: factory {factory_id!r} already has {in_factory} sensors "
                "(MOBY_MAX_SENSORS_PER_FACTORY)"
            )
        return None

    def fields_of(self, measurement: str) -> set[str]:
        """The value names known for a measurement (the caller must not change the set)."""
        known = self._fields.get(measurement)
        if known is None:
            known = self._fields[measurement] = set()
        return known

    def admit_fields(self, measurement: str, names: Iterable[str]) -> str:
        """Learn a measurement's new value names, or say why not ('' when admitted).

        All or nothing: a reading whose new names would pass the budget adds none of them.
        """
        known = self.fields_of(measurement)
        new = {name for name in names if name not in known}
        if not new:
            return ""
        if len(known) + len(new) > self.max_fields_per_measurement:
            shown = ", ".join(sorted(new)[:5]) + (", ..." if len(new) > 5 else "")
            return (
                f"new value names ({shown}) would give measurement {measurement!r} "
                f"{len(known) + len(new)} fields, more than {self.max_fields_per_measurement} "
                "(MOBY_MAX_FIELDS_PER_MEASUREMENT)"
            )
        known |= new
        self._dirty_fields.extend((measurement, name) for name in sorted(new))
        return ""

    def take_dirty_fields(self) -> list[tuple[str, str]]:
        dirty, self._dirty_fields = self._dirty_fields, []
        return dirty

    # -- records -------------------------------------------------------------------------------
    def get(self, factory_id: str, sensor_id: str) -> SensorRecord | None:
        return self._sensors.get((factory_id, sensor_id))

    def _record(self, factory_id: str, sensor_id: str) -> SensorRecord:
        """The sensor's record, made when new: callers check :meth:`admit` first."""
        key = (factory_id, sensor_id)
        record = self._sensors.get(key)
        if record is None:
            record = self._sensors[key] = SensorRecord(factory_id, sensor_id)
            self._per_factory[factory_id] = self._per_factory.get(factory_id, 0) + 1
            self._new.append(key)
        self._dirty.add(key)
        return record

    def saw_telemetry(
        self, factory_id: str, sensor_id: str, sensor_type: str, now_ms: int, readings: int
    ) -> SensorRecord:
        record = self._record(factory_id, sensor_id)
        record.sensor_type = sensor_type
        record.last_seen_ms = now_ms
        record.readings += readings
        record.stopped = False
        if record.online is None:
            record.online = True
        return record

    def saw_status(self, factory_id: str, sensor_id: str, status: Status, now_ms: int) -> bool:
        """Apply a birth/death message; True when the enrichment tags changed."""
        record = self._record(factory_id, sensor_id)
        before = record.tags
        record.online = status.online
        record.stopped = not status.online
        record.status_ts_ms = status.ts if isinstance(status.ts, int) else now_ms
        if status.online:
            record.last_seen_ms = now_ms
            if status.gateway != record.gateway:
                record.gateway = status.gateway
                self._gateways += 1 if status.gateway else -1
            meta = status.model_dump(
                exclude={"schema_", "online", "ts", "gateway"}, exclude_none=True, exclude_defaults=True
            )
            if meta:
                record.metadata = meta
                record.sensor_type = status.sensor_type or record.sensor_type
        return record.tags != before

    def saw_health(self, factory_id: str, sensor_id: str, health: Health, now_ms: int) -> None:
        record = self._record(factory_id, sensor_id)
        record.last_seen_ms = now_ms
        record.stopped = False
        record.health = bounded_health(health)

    def take_dirty(self) -> list[SensorRecord]:
        dirty = [self._sensors[key] for key in self._dirty]
        self._dirty.clear()
        return dirty

    def all(self) -> list[SensorRecord]:
        return list(self._sensors.values())

    def page(
        self,
        limit: int,
        *,
        after: SensorKey | None = None,
        factory_id: str | None = None,
        keep: Callable[[SensorRecord], bool] = lambda r: True,
    ) -> tuple[list[SensorRecord], int, SensorKey | None]:
        """Up to ``limit`` records that ``keep`` accepts, in (factory_id, sensor_id) order after
        ``after``; how many records ``keep`` accepts in all; and the key to pass as ``after`` for
        the next page (None on the last page)."""
        if self._new:
            self._order += self._new
            self._order.sort()
            self._new = []
        order = self._order
        lo, hi = 0, len(order)
        if factory_id is not None:  # one factory's keys are one run of the sorted list
            lo = bisect.bisect_left(order, (factory_id, ""))
            hi = bisect.bisect_left(order, (factory_id + "\0", ""))
        items: list[SensorRecord] = []
        total = 0
        more = False
        sensors = self._sensors
        for i in range(lo, hi):
            key = order[i]
            record = sensors[key]
            if not keep(record):
                continue
            total += 1
            if after is not None and key <= after:
                continue
            if len(items) < limit:
                items.append(record)
            else:
                more = True
        last = (items[-1].factory_id, items[-1].sensor_id) if more and items else None
        return items, total, last

    @property
    def sensor_count(self) -> int:
        """Sensors, not counting gateways."""
        return len(self._sensors) - self._gateways

    def __len__(self) -> int:
        return len(self._sensors)
