"""Validate one MQTT message against the contract and turn telemetry into line protocol.

:meth:`Processor.process` never raises on bad input: it returns :class:`Rejected` with a
reason code (a small fixed set, used as a metric label) and a human-readable detail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain
from typing import Final

from pydantic import ValidationError

from moby.ingest.lineproto import (
    fields_from_json,
    fields_from_json_list,
    name_marker,
    series_key,
    values_json,
)
from moby.ingest.registry import Registry
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

# The adapter's core validator, called directly: TypeAdapter.validate_json adds ~1 µs of
# Python per call on the hot path.
_validate_telemetry = TELEMETRY.validator.validate_json

# Field names the pipeline itself writes next to a reading's values; a value may not take them.
RESERVED = ("seq", "quality")
_SEQ_NAME, _QUALITY_NAME = (name_marker(name) for name in RESERVED)
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
    WRITE = "write_rejected"


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
        parts.append(f"{loc}: {error['msg']}" if loc else error["msg"])
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _is_json_error(exc: ValidationError) -> bool:
    return any(e["type"] == "json_invalid" for e in exc.errors(include_url=False))


class Processor:
    def __init__(
        self,
        registry: Registry,
        *,
        max_age_s: int = 7 * 86400,
        max_future_s: int = 600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self._max_age_ms = max_age_s * 1000
        self._max_future_ms = max_future_s * 1000
        self._clock = clock
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
        now_ms = int(self._clock() * 1000)
        oldest, newest = now_ms - self._max_age_ms, now_ms + self._max_future_ms
        prefix = self._prefix(topic, message.sensor_type)
        if message.readings is None:  # one reading inline: the common case, kept short
            ts, seq, values = message.ts, message.seq, message.values
            assert ts is not None and seq is not None and values is not None
            rendered = values_json(values)
            if _SEQ_NAME in rendered or _QUALITY_NAME in rendered:
                return self._reserved(seq)
            if not oldest <= ts <= newest:
                return self._out_of_range(seq, ts)
            quality = _QUALITY_FIELD[message.quality]
            lines = b"%b %b,seq=%di%b %d\n" % (prefix, fields_from_json(rendered), seq, quality, ts)
            count, first_ts = 1, ts
        else:
            encoded = self._encode_batch(prefix, message.readings, oldest, newest)
            if isinstance(encoded, Rejected):
                return encoded
            lines, count, first_ts = encoded
        self.registry.saw_telemetry(topic.factory_id, topic.sensor_id, message.sensor_type, now_ms, count)
        return Accepted(lines, count, first_ts)

    def _encode_batch(
        self, prefix: bytes, readings: list[Reading], oldest: int, newest: int
    ) -> tuple[bytes, int, int] | Rejected:
        """Every reading's line in one pass of C and Rust code, no Python per value."""
        rendered = values_json([r["values"] for r in readings])
        seqs = [r["seq"] for r in readings]
        if _SEQ_NAME in rendered or _QUALITY_NAME in rendered:
            bad = next(r for r in readings if any(name in r["values"] for name in RESERVED))
            return self._reserved(bad["seq"])
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
        else:
            template = head + b" %b,seq=%di %d\n"
            parts = chain.from_iterable(zip(fields, seqs, stamps, strict=True))
        return (template * len(readings)) % tuple(parts), len(readings), first_ts

    @staticmethod
    def _reserved(seq: int) -> Rejected:
        return Rejected(Reason.SCHEMA, f"reading seq={seq}: value names {RESERVED} are reserved")

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
        self.registry.saw_health(topic.factory_id, topic.sensor_id, health, int(self._clock() * 1000))
        return Noted(TopicKind.HEALTH)


def _identity_mismatch(topic: Topic, factory_id: str | None, sensor_id: str | None) -> str:
    if sensor_id is not None and sensor_id != topic.sensor_id:
        return f"payload sensor_id {sensor_id!r} != topic's {topic.sensor_id!r}"
    if factory_id is not None and factory_id != topic.factory_id:
        return f"payload factory_id {factory_id!r} != topic's {topic.factory_id!r}"
    return ""
