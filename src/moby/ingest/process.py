"""Validate one MQTT message against the contract and turn telemetry into line protocol.

:meth:`Processor.process` never raises on bad input: it returns :class:`Rejected` with a
reason code (a small fixed set, used as a metric label) and a human-readable detail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain
from typing import Final

from pydantic import ValidationError

from moby.config import DEFAULT_SENSOR_TYPES
from moby.ingest.jsonkeys import may_repeat_keys, repeated_key
from moby.ingest.lineproto import (
    fields_from_json,
    fields_from_json_list,
    series_key,
    values_json,
)
from moby.ingest.registry import Registry
from moby.metrics import Metrics
from moby.schema import (
    HEALTH,
    MAX_PAYLOAD_BYTES,
    STATUS,
    TELEMETRY,
    Quality,
    Reading,
    Telemetry,
    Topic,
    TopicError,
    TopicKind,
    parse_topic,
)
from moby.schema.payloads import RFC3339_PATTERN

# The adapter's core validator, called directly: TypeAdapter.validate_json adds ~1 µs of
# Python per call on the hot path.
_validate_telemetry = TELEMETRY.validator.validate_json

# Names a value may not take: the tags of a point (a field named like a tag shadows it in a
# WHERE clause), InfluxDB's "time" (silently dropped), and the fields the pipeline itself writes
# next to a reading's values.
RESERVED = ("factory_id", "sensor_id", "line_id", "machine_id", "time", "seq", "quality", "qc", "qc_failed")
_RESERVED_SET: Final = frozenset(RESERVED)
# Measurement names the backend writes itself (moby_internal, moby_sensor_status, ...).
BACKEND_PREFIX: Final = "moby_"
_GOOD = Quality.GOOD
# What a reading's quality adds to its line: nothing when good (the default).
_QUALITY_FIELD: Final = {q: b"" if q is _GOOD else b',quality="%b"' % q.value.encode() for q in Quality}


class Reason(StrEnum):
    """Why a message was dead-lettered."""

    TOPIC = "invalid_topic"
    TOO_LARGE = "too_large"
    JSON = "invalid_json"
    SCHEMA = "invalid_schema"
    IDENTITY = "identity_mismatch"
    TIME = "time_out_of_range"
    CARDINALITY = "cardinality_limit"
    WRITE = "write_rejected"


class Limit(StrEnum):
    """Which budget a ``cardinality_limit`` rejection hit (the label of its metric)."""

    SENSOR_TYPE = "sensor_type"
    FIELDS = "fields_per_measurement"
    SENSORS = "sensors"
    SENSORS_PER_FACTORY = "sensors_per_factory"
    FACTORIES = "factories"


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 µs per message
class Accepted:
    """Telemetry ready to queue: newline-terminated line protocol."""

    lines: bytes
    points: int
    first_ts_ms: int


@dataclass(frozen=True, slots=True)
class Noted:
    """A status or health message: it updated the registry and is not written as points."""

    kind: TopicKind


Outcome = Accepted | Rejected | Noted


def describe(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in error["loc"] if p not in ("single", "batch"))
        msg = error["msg"]
        if (
            error["type"] == "string_pattern_mismatch"
            and error.get("ctx", {}).get("pattern") == RFC3339_PATTERN
        ):
            msg = "not an RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.fraction] then Z or +HH:MM/-HH:MM"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _repeats(payload: bytes) -> Rejected | None:
    """A dead letter when the JSON text gives a key twice in one object (at any depth)."""
    try:
        key = repeated_key(payload)
    except ValueError as exc:
        return Rejected(Reason.JSON, f"unreadable JSON: {str(exc)[:200]}")
    if key is None:
        return None
    return Rejected(Reason.JSON, f"key {key[:64]!r} is given twice in one object")


def _is_json_error(exc: ValidationError) -> bool:
    return any(e["type"] == "json_invalid" for e in exc.errors(include_url=False))


class Processor:
    def __init__(
        self,
        registry: Registry,
        *,
        max_age_s: int = 7 * 86400,
        max_future_s: int = 600,
        sensor_types: Collection[str] = DEFAULT_SENSOR_TYPES,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self._max_age_ms = max_age_s * 1000
        self._max_future_ms = max_future_s * 1000
        self._sensor_types = frozenset(t for t in sensor_types if not t.startswith(BACKEND_PREFIX))
        self._types_text = ", ".join(sorted(self._sensor_types))
        self._clock = clock
        self.cardinality_rejected = dict.fromkeys(Limit, 0)
        self._limit_counters = (
            {limit: metrics.cardinality_rejected.labels(limit.value) for limit in Limit} if metrics else None
        )
        self._topics: dict[str, Topic | Rejected] = {}
        self._prefixes: dict[tuple[str, str, str], bytes] = {}

    def process(self, topic: str, payload: bytes) -> Outcome:
        parsed = self._parse_topic(topic)
        if isinstance(parsed, Rejected):
            return parsed
        if len(payload) > MAX_PAYLOAD_BYTES:
            return Rejected(Reason.TOO_LARGE, f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
        if parsed.kind is TopicKind.TELEMETRY:
            return self._telemetry(parsed, payload)
        if parsed.kind is TopicKind.STATUS:
            return self._status(parsed, payload)
        if parsed.kind is TopicKind.HEALTH:
            return self._health(parsed, payload)
        return Rejected(Reason.TOPIC, f"the backend does not ingest {parsed.kind} messages")

    def _parse_topic(self, topic: str) -> Topic | Rejected:
        cached = self._topics.get(topic)
        if cached is None:
            try:
                cached = parse_topic(topic)
            except TopicError as exc:
                cached = Rejected(Reason.TOPIC, str(exc))
            if len(self._topics) > 100_000:  # bound the cache: sensors come and go
                self._topics.clear()
            self._topics[topic] = cached
        return cached

    def _telemetry(self, topic: Topic, payload: bytes) -> Outcome:
        try:
            message: Telemetry = _validate_telemetry(payload)
        except ValidationError as exc:
            return Rejected(Reason.JSON if _is_json_error(exc) else Reason.SCHEMA, describe(exc))
        mismatch = _identity_mismatch(topic, message.factory_id, message.sensor_id)
        if mismatch:
            return Rejected(Reason.IDENTITY, mismatch)
        sensor_type = message.sensor_type
        if sensor_type not in self._sensor_types:
            return self._unknown_type(sensor_type)
        registry = self.registry
        if registry.get(topic.factory_id, topic.sensor_id) is None and (refused := self._admit(topic)):
            return refused
        now_ms = int(self._clock() * 1000)
        oldest, newest = now_ms - self._max_age_ms, now_ms + self._max_future_ms
        prefix = self._prefix(topic, sensor_type)
        # Value names seen before passed every check below; only new ones need looking at.
        known = registry.fields_of(sensor_type)
        # Every key the message has, counted from its validated form (see jsonkeys).
        keys = len(message.model_fields_set)
        if message.readings is None:  # one reading inline: the common case, kept short
            ts, seq, values = message.ts, message.seq, message.values
            assert ts is not None and seq is not None and values is not None
            names: Collection[str] = values
            new_names = not known.issuperset(values)
            if new_names and not _RESERVED_SET.isdisjoint(values):
                return self._reserved(seq)
            if not oldest <= ts <= newest:
                return self._out_of_range(seq, ts)
            keys += len(values)
            quality = _QUALITY_FIELD[message.quality]
            fields = fields_from_json(values_json(values))
            lines = b"%b %b,seq=%di%b %d\n" % (prefix, fields, seq, quality, ts)
            count, first_ts = 1, ts
        else:
            readings = message.readings
            all_values = [r["values"] for r in readings]
            names = set().union(*all_values)
            new_names = not known.issuperset(names)
            if new_names and not _RESERVED_SET.isdisjoint(names):
                bad = next(r for r in readings if not _RESERVED_SET.isdisjoint(r["values"]))
                return self._reserved(bad["seq"])
            encoded = self._encode_batch(prefix, readings, all_values, oldest, newest)
            if isinstance(encoded, Rejected):
                return encoded
            lines, count, first_ts, reading_keys = encoded
            keys += reading_keys + sum(map(len, all_values))
        if may_repeat_keys(payload, keys) and (repeated := _repeats(payload)) is not None:
            return repeated
        if new_names:
            detail = registry.admit_fields(sensor_type, names)
            if detail:
                return self._over_budget(Limit.FIELDS, detail)
        registry.saw_telemetry(topic.factory_id, topic.sensor_id, sensor_type, now_ms, count)
        return Accepted(lines, count, first_ts)

    def _unknown_type(self, sensor_type: str) -> Rejected:
        if sensor_type.startswith(BACKEND_PREFIX):
            return Rejected(
                Reason.SCHEMA,
                f"sensor_type {sensor_type!r}: names starting with {BACKEND_PREFIX!r} are the "
                "backend's own measurements",
            )
        return self._over_budget(
            Limit.SENSOR_TYPE,
            f"sensor_type {sensor_type!r} is not one of the configured sensor types "
            f"({self._types_text}; MOBY_SENSOR_TYPES)",
        )

    def _admit(self, topic: Topic) -> Rejected | None:
        """None when the registry may hold one more sensor for this topic, else a dead letter."""
        refused = self.registry.admit(topic.factory_id, topic.sensor_id)
        if refused is None:
            return None
        limit, detail = refused
        return self._over_budget(Limit(limit), detail)

    def _over_budget(self, limit: Limit, detail: str) -> Rejected:
        self.cardinality_rejected[limit] += 1
        if self._limit_counters is not None:
            self._limit_counters[limit].inc()
        return Rejected(Reason.CARDINALITY, detail)

    def _encode_batch(
        self,
        prefix: bytes,
        readings: list[Reading],
        all_values: list[dict[str, float]],
        oldest: int,
        newest: int,
    ) -> tuple[bytes, int, int, int] | Rejected:
        """Every reading's line in one pass of C and Rust code, no Python per value; also the
        number of keys the readings' objects hold (``ts``, ``seq``, ``values``, ``quality``)."""
        rendered = values_json(all_values)
        seqs = [r["seq"] for r in readings]
        stamps = [r["ts"] for r in readings]
        first_ts, last_ts = min(stamps), max(stamps)
        if first_ts < oldest or last_ts > newest:
            bad = next(r for r in readings if not oldest <= r["ts"] <= newest)
            return self._out_of_range(bad["seq"], bad["ts"])
        fields = fields_from_json_list(rendered)
        head = prefix.replace(b"%", b"%%")
        if any("quality" in r for r in readings):
            qualities = [_QUALITY_FIELD[r.get("quality", _GOOD)] for r in readings]
            template = head + b" %b,seq=%di%b %d\n"
            parts = chain.from_iterable(zip(fields, seqs, qualities, stamps, strict=True))
            keys = sum(map(len, readings))
        else:
            template = head + b" %b,seq=%di %d\n"
            parts = chain.from_iterable(zip(fields, seqs, stamps, strict=True))
            keys = 3 * len(readings)
        return (template * len(readings)) % tuple(parts), len(readings), first_ts, keys

    @staticmethod
    def _reserved(seq: int) -> Rejected:
        return Rejected(Reason.SCHEMA, f"reading seq={seq}: value names {', '.join(RESERVED)} are reserved")

    def _out_of_range(self, seq: int, ts: int) -> Rejected:
        return Rejected(
            Reason.TIME,
            f"reading seq={seq} ts={ts} is outside "
            f"[now-{self._max_age_ms // 1000}s, now+{self._max_future_ms // 1000}s]",
        )

    def _prefix(self, topic: Topic, sensor_type: str) -> bytes:
        """``measurement,tags`` for a sensor, with its birth metadata tags (cached)."""
        key = (topic.factory_id, topic.sensor_id, sensor_type)
        prefix = self._prefixes.get(key)
        if prefix is None:
            record = self.registry.get(topic.factory_id, topic.sensor_id)
            tags = record.tags if record is not None else {}
            all_tags = {**tags, "factory_id": topic.factory_id, "sensor_id": topic.sensor_id}
            if len(self._prefixes) > 2 * self.registry.max_sensors:  # bound the cache
                self._prefixes.clear()
            prefix = self._prefixes[key] = series_key(sensor_type, all_tags).encode()
        return prefix

    def _status(self, topic: Topic, payload: bytes) -> Outcome:
        if not payload:
            # An empty retained message is how a retained status is cleared: nothing to record.
            return Noted(TopicKind.STATUS)
        try:
            status = STATUS.validate_json(payload)
        except ValidationError as exc:
            return Rejected(Reason.JSON if _is_json_error(exc) else Reason.SCHEMA, describe(exc))
        # Few and small: always checked the thorough way.
        if (repeated := _repeats(payload)) is not None:
            return repeated
        if status.sensor_type is not None and status.sensor_type.startswith(BACKEND_PREFIX):
            return self._unknown_type(status.sensor_type)
        if self.registry.get(topic.factory_id, topic.sensor_id) is None and (refused := self._admit(topic)):
            return refused
        now_ms = int(self._clock() * 1000)
        if self.registry.saw_status(topic.factory_id, topic.sensor_id, status, now_ms):
            for key in [k for k in self._prefixes if k[:2] == (topic.factory_id, topic.sensor_id)]:
                del self._prefixes[key]
        return Noted(TopicKind.STATUS)

    def _health(self, topic: Topic, payload: bytes) -> Outcome:
        try:
            health = HEALTH.validate_json(payload)
        except ValidationError as exc:
            return Rejected(Reason.JSON if _is_json_error(exc) else Reason.SCHEMA, describe(exc))
        if (repeated := _repeats(payload)) is not None:
            return repeated
        if self.registry.get(topic.factory_id, topic.sensor_id) is None and (refused := self._admit(topic)):
            return refused
        self.registry.saw_health(topic.factory_id, topic.sensor_id, health, int(self._clock() * 1000))
        return Noted(TopicKind.HEALTH)


def _identity_mismatch(topic: Topic, factory_id: str | None, sensor_id: str | None) -> str:
    if sensor_id is not None and sensor_id != topic.sensor_id:
        return f"payload sensor_id {sensor_id!r} != topic's {topic.sensor_id!r}"
    if factory_id is not None and factory_id != topic.factory_id:
        return f"payload factory_id {factory_id!r} != topic's {topic.factory_id!r}"
    return ""
