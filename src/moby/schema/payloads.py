"""Pydantic models of the contract's payloads: the single source of truth for their shape.

Shape only: rules that depend on configuration (how old a reading may be) or on the topic
(identity) are applied by :mod:`moby.ingest.validate`, which uses these models.
Unknown top-level fields are ignored so that a v1 sensor may send fields added to the contract
later (the contract allows additive change); a field that *is* known must be exactly right.
"""

from __future__ import annotations

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


def _rfc3339_to_ms(value: str) -> int:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("ts is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise ValueError("ts needs a time zone (e.g. 'Z' or '+09:00')")
    # integer arithmetic: float seconds * 1000 can land 1 ms off
    ms = (parsed - _EPOCH) // timedelta(milliseconds=1)
    if not 0 <= ms < _MAX_TS:
        raise ValueError("ts is out of range")
    return ms


if TYPE_CHECKING:  # after validation a timestamp is always integer epoch milliseconds
    Timestamp = int
else:
    # Integers are checked in Rust with no Python call (the hot path); only strings reach
    # _rfc3339_to_ms. "left_to_right": try the integer form first, then the string form.
    Timestamp = Annotated[
        Annotated[int, Field(strict=True, ge=0, lt=_MAX_TS)]
        | Annotated[str, Field(max_length=64), AfterValidator(_rfc3339_to_ms)],
        Field(union_mode="left_to_right"),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 0, "description": "epoch milliseconds"},
                    {"type": "string", "format": "date-time", "description": "RFC 3339 with a time zone"},
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


HEALTH: Final = TypeAdapter(Health)
STATUS: Final = TypeAdapter(Status)
