"""Pydantic models of the contract's payloads: the single source of truth for their shape.

Shape only: rules that depend on configuration (how old a reading may be) or on the topic
(identity) are applied by :mod:`moby.ingest.validate`, which uses these models.
Unknown top-level fields are ignored so that a v1 sensor may send fields added to the contract
later (the contract allows additive change); a field that *is* known must be exactly right.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Final, Literal, NamedTuple, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)
from typing_extensions import TypedDict

from moby.schema.topics import ID_PATTERN

TELEMETRY_SCHEMA: Final = "moby.telemetry.v1"
HEALTH_SCHEMA: Final = "moby.health.v1"
STATUS_SCHEMA: Final = "moby.status.v1"

MAX_PAYLOAD_BYTES: Final = 256 * 1024
MAX_VALUES: Final = 100
MAX_READINGS: Final = 1000
SENSOR_TYPE_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"
VALUE_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"

Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
SensorType = Annotated[str, Field(pattern=SENSOR_TYPE_PATTERN)]
ValueName = Annotated[str, Field(pattern=VALUE_NAME_PATTERN)]
# strict: "2.5" and true are not numbers; allow_inf_nan=False: NaN and ±Infinity are refused.
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Seq = Annotated[int, Field(strict=True, ge=0, lt=2**63)]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_MAX_TS = 2**53  # epoch ms that a JSON number (IEEE double) still carries exactly


# RFC 3339 section 5.6 ``date-time``, exactly: full-date "T" partial-time time-offset. "T" and
# "Z" may be lower case (the RFC's ABNF strings are case-insensitive); no space instead of "T"
# (the RFC's note allows an application to choose one, this contract does not), no ISO 8601
# basic format (20261201T135157Z), week or ordinal dates, no hour without minutes, no offset
# without a colon. [0-9], not \d: \d would also take other scripts' digits. Checked in Rust by
# pydantic-core (a Python regex per timestamp cost more than the rest of its parsing), and
# published in the JSON Schema as the string's pattern.
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
# The same, taken apart (only for the rare leap second).
_RFC3339_PARTS: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


_MS: Final = timedelta(milliseconds=1)


def _rfc3339_to_ms(value: str) -> int:
    """Epoch milliseconds of a string that matches :data:`RFC3339_PATTERN` (fractions below
    1 ms are truncated); ValueError when its numbers are out of range."""
    if value[-1] not in "Zz" and (value[-5:-3] > "23" or value[-2:] > "59"):
        raise ValueError("ts has an offset outside -23:59..+23:59")
    if value[17:19] == "60":
        ms = _leap_second_ms(value)
    else:
        # The shape is RFC 3339's (the regex); datetime's C parser reads the numbers and checks
        # their ranges. upper(): it takes "T" and "Z" only.
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError as exc:
            raise ValueError(f"ts is not a valid date and time: {exc}") from None
        # integer arithmetic: float seconds * 1000 can land 1 ms off
        since = parsed - _EPOCH
        ms = since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000
    if not 0 <= ms < _MAX_TS:
        raise ValueError("ts is out of range")
    return ms


def _leap_second_ms(value: str) -> int:
    """``…:60``: a leap second, only ever at 23:59:60 UTC. POSIX time (and InfluxDB) has none, so
    it is stored as the second after 23:59:59."""
    match = _RFC3339_PARTS.fullmatch(value)
    assert match is not None
    year, month, day, hour, minute, _, fraction, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0))
        utc = datetime(int(year), int(month), int(day), int(hour), int(minute), 59, tzinfo=UTC) - (
            offset if sign == "+" else -offset
        )
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"ts is not a valid date and time: {exc}") from None
    if (utc.hour, utc.minute) != (23, 59):
        raise ValueError("ts has second 60, which only a leap second at 23:59:60 UTC may have")
    return (utc - _EPOCH) // _MS + 1000 + (int((fraction[1:] + "00")[:3]) if fraction else 0)


if TYPE_CHECKING:  # after validation a timestamp is always integer epoch milliseconds
    Timestamp = int
else:
    # Integers are checked in Rust with no Python call (the hot path); only strings reach
    # _rfc3339_to_ms. "left_to_right": try the integer form first, then the string form.
    Timestamp = Annotated[
        Annotated[int, Field(strict=True, ge=0, lt=_MAX_TS)]
        | Annotated[str, Field(max_length=64, pattern=RFC3339_PATTERN), AfterValidator(_rfc3339_to_ms)],
        Field(union_mode="left_to_right"),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 0, "description": "epoch milliseconds"},
                    {
                        "type": "string",
                        "format": "date-time",
                        "pattern": RFC3339_PATTERN,
                        "maxLength": 64,
                        "description": "RFC 3339 date-time (section 5.6) with a time zone",
                    },
                ]
            }
        ),
    ]


class Quality(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


Values = Annotated[
    dict[ValueName, FiniteNumber],
    Field(
        min_length=1,
        max_length=MAX_VALUES,
        description="value name → finite number. The MOBY backend stores 'seq' and 'quality' as "
        "fields of their own and rejects readings that use them as value names.",
    ),
]


class Reading(TypedDict):
    """One reading of a batch: a time, the sensor's sequence number and up to 100 named numbers.

    A TypedDict, not a model: Pydantic validates it just as strictly, and skipping a model
    instance per reading makes a 100-reading message ~3x cheaper to validate.
    """

    ts: Timestamp
    seq: Seq
    values: Values
    quality: NotRequired[Quality]


class ReadingView(NamedTuple):
    """A validated reading, whichever form of message it came in."""

    ts: int
    seq: int
    values: dict[str, float]
    quality: Quality


_ONE_FORM: Final[dict[str, JsonValue]] = {
    "oneOf": [
        {"required": ["ts", "seq", "values"], "not": {"required": ["readings"]}},
        {"required": ["readings"], "not": {"anyOf": [{"required": [k]} for k in ("ts", "seq", "values")]}},
    ]
}


class Telemetry(BaseModel):
    """``moby.telemetry.v1``: one reading inline (``ts``, ``seq``, ``values``) or a batch (``readings``).

    One flat model rather than a union of two: a union with a discriminator function made
    Pydantic build Python objects before validating, at twice the cost.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra=_ONE_FORM)

    schema_: Literal["moby.telemetry.v1"] = Field(alias="schema")
    sensor_type: SensorType
    # Optional echoes of the topic's identity; the topic is authoritative and they must agree.
    factory_id: Identifier | None = None
    sensor_id: Identifier | None = None
    ts: Timestamp | None = None
    seq: Seq | None = None
    values: Values | None = None
    quality: Quality = Quality.GOOD
    readings: Annotated[list[Reading], Field(min_length=1, max_length=MAX_READINGS)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Telemetry:
        if self.readings is None:
            if self.ts is None or self.seq is None or self.values is None:  # the hot path: cheap test first
                missing = [k for k in ("ts", "seq", "values") if getattr(self, k) is None]
                raise ValueError(f"a single reading needs {missing} (or send 'readings')")
        elif self.ts is not None or self.seq is not None or self.values is not None:
            raise ValueError("a batch carries 'readings' only, not 'ts'/'seq'/'values' too")
        return self

    def iter_readings(self) -> list[ReadingView]:
        if self.readings is None:
            assert self.ts is not None and self.seq is not None and self.values is not None
            return [ReadingView(self.ts, self.seq, self.values, self.quality)]
        good = Quality.GOOD
        return [ReadingView(r["ts"], r["seq"], r["values"], r.get("quality", good)) for r in self.readings]


TELEMETRY: Final = TypeAdapter(Telemetry)


class Health(BaseModel):
    """``moby.health.v1``: a sensor's periodic report on itself."""

    model_config = ConfigDict(extra="allow", frozen=True)

    schema_: Literal["moby.health.v1"] = Field(alias="schema")
    ts: Timestamp
    uptime_s: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
    buffer_depth: Annotated[int, Field(strict=True, ge=0)]
    battery_pct: Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)] | None = None
    rssi_dbm: Annotated[float, Field(strict=True, ge=-200, le=50, allow_inf_nan=False)] | None = None
    errors: dict[Annotated[str, Field(max_length=64)], Annotated[int, Field(strict=True, ge=0)]] = Field(
        default_factory=dict, max_length=100
    )
    firmware: Annotated[str, Field(max_length=64)] | None = None


class Status(BaseModel):
    """``moby.status.v1`` (retained): birth with the sensor's metadata, or death (also the Last Will)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_: Literal["moby.status.v1"] = Field(alias="schema")
    online: Annotated[bool, Field(strict=True)]
    ts: Timestamp | None = None
    sensor_type: SensorType | None = None
    model: Annotated[str, Field(max_length=128)] | None = None
    firmware: Annotated[str, Field(max_length=64)] | None = None
    line_id: Identifier | None = None
    machine_id: Identifier | None = None
    units: dict[ValueName, Annotated[str, Field(max_length=32)]] = Field(
        default_factory=dict, max_length=MAX_VALUES
    )
    # A connection that carries other sensors' messages (``moby simulate``'s gateways), not a
    # sensor: the backend lists it apart and does not count it in the fleet.
    gateway: Annotated[bool, Field(strict=True)] = False


HEALTH: Final = TypeAdapter(Health)
STATUS: Final = TypeAdapter(Status)
