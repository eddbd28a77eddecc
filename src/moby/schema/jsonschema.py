"""JSON Schema files generated from the payload models (``docs/schema/``, kept fresh by a test).

The published schemas say exactly what the backend accepts, as far as a JSON Schema can say it
(tests/unit/test_schema_agreement.py runs a corpus of messages through a standard validator and
through the backend's processor and requires the same verdict). Pydantic's own schema of the
models is the starting point; :func:`tighten` adds what it leaves out:

* every number is finite (JSON has no NaN or infinity; a literal such as 1e400 is one);
* a map's keys are checked (``propertyNames``), not only the keys that match a pattern;
* ``ts`` is an integer in [0, 2^53) or an RFC 3339 date-time with a time zone, by a pattern
  that also knows the calendar (no 30 February; 29 February of leap years only);
* a single reading has non-null ``ts``, ``seq`` and ``values`` and no ``readings``; a batch has
  ``readings`` and no non-null ``ts``/``seq``/``values`` (null is the same as absent);
* value names the backend reserves are refused.

What a JSON Schema cannot say (the backend still checks it) is listed in :data:`NOT_EXPRESSED`
and written into each schema's ``$comment``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from pydantic import TypeAdapter

from moby.schema.payloads import (
    HEALTH,
    HEALTH_SCHEMA,
    MAX_PAYLOAD_BYTES,
    STATUS,
    STATUS_SCHEMA,
    TELEMETRY,
    TELEMETRY_SCHEMA,
    VALUE_NAME_PATTERN,
)

SCHEMAS: dict[str, TypeAdapter[Any]] = {
    TELEMETRY_SCHEMA: TELEMETRY,
    HEALTH_SCHEMA: HEALTH,
    STATUS_SCHEMA: STATUS,
}

# Names a value may not take (the contract, "What lands in InfluxDB"): the tags of a point,
# InfluxDB's time, and the fields the pipeline writes next to a reading's values.
RESERVED_VALUE_NAMES: Final = (
    "factory_id",
    "sensor_id",
    "line_id",
    "machine_id",
    "time",
    "seq",
    "quality",
    "qc",
    "qc_failed",
)

MAX_TS_MS: Final = 2**53  # epoch ms that a JSON number (an IEEE double) still carries exactly
MAX_TS_TEXT: Final = 64

# RFC 3339 section 5.6 date-time, exactly: "T" and "Z" in either case, seconds always, the offset
# with a colon. The date part knows the Gregorian calendar, so a validator needs no format
# checker to refuse 2025-02-29 or 2025-04-31. [0-9], not \d (which takes other scripts' digits).
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    "(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    f"|{_LEAP_YEAR}-02-29)"
)
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\\.[0-9]+)?"
_OFFSET = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
RFC3339_PATTERN: Final = f"^{_DATE}[Tt]{_TIME}{_OFFSET}$"

TIMESTAMP: Final[list[dict[str, Any]]] = [
    {
        "type": "integer",
        "minimum": 0,
        "exclusiveMaximum": MAX_TS_MS,
        "description": "epoch milliseconds",
    },
    {
        "type": "string",
        "maxLength": MAX_TS_TEXT,
        "pattern": RFC3339_PATTERN,
        "format": "date-time",
        "description": "RFC 3339 date-time with a time zone (Z or ±HH:MM), seconds included",
    },
]

_EVERY_PAYLOAD: Final = (
    f"the payload's size (at most {MAX_PAYLOAD_BYTES} bytes of UTF-8 JSON)",
    "a key given twice in one object (refused)",
    "text that is not valid Unicode (a lone surrogate escape such as \\ud800: refused)",
    "1.0 and 1 are the same JSON Schema number, but integers (ts, seq, counters) must be written as integers",
    "a ts before 1970-01-01T00:00:00Z is refused, and a leap second (:60) is taken only at 23:59:60 UTC",
)
NOT_EXPRESSED: Final[dict[str, tuple[str, ...]]] = {
    TELEMETRY_SCHEMA: (
        *_EVERY_PAYLOAD,
        "the time window: a reading older than MOBY_MAX_AGE_S or further ahead than "
        "MOBY_MAX_FUTURE_S (relative to the backend's clock) is refused",
        "the topic is the identity: factory_id and sensor_id, when present, must equal the topic's",
        "sensor_type must be one the backend is configured for (MOBY_SENSOR_TYPES; by default "
        "vibration, noise, temperature, humidity)",
    ),
    HEALTH_SCHEMA: _EVERY_PAYLOAD,
    STATUS_SCHEMA: _EVERY_PAYLOAD,
}


def _is_timestamp(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf")
    return isinstance(options, list) and any(
        isinstance(o, dict) and o.get("description") == "epoch milliseconds" for o in options
    )


def tighten(node: Any) -> Any:
    """The schema with the backend's rules that pydantic's generator leaves out (see module doc)."""
    if isinstance(node, list):
        return [tighten(item) for item in node]
    if not isinstance(node, dict):
        return node
    if _is_timestamp(node):
        nulls = [o for o in node["anyOf"] if o.get("type") == "null"]
        return {**{k: v for k, v in node.items() if k != "anyOf"}, "anyOf": [*TIMESTAMP, *nulls]}
    out = {key: tighten(value) for key, value in node.items()}
    patterns = out.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in out:
        # dict[Name, X]: every key must match, not only the ones that happen to.
        ((pattern, values),) = patterns.items()
        del out["patternProperties"]
        out["propertyNames"] = {"pattern": pattern}
        out["additionalProperties"] = values
    if out.get("type") == "number":
        out.setdefault("minimum", -sys.float_info.max)
        out.setdefault("maximum", sys.float_info.max)
    return out


def _reserve_value_names(node: Any) -> None:
    """Add the reserved names to every map of values (a name pattern → numbers)."""
    if isinstance(node, list):
        for item in node:
            _reserve_value_names(item)
        return
    if not isinstance(node, dict):
        return
    names = node.get("propertyNames")
    values = node.get("additionalProperties")
    if (
        isinstance(names, dict)
        and names.get("pattern") == VALUE_NAME_PATTERN
        and isinstance(values, dict)
        and values.get("type") == "number"
    ):
        names["not"] = {"enum": list(RESERVED_VALUE_NAMES)}
        node["description"] = (
            "value name → finite number; the names "
            + ", ".join(RESERVED_VALUE_NAMES)
            + " are the backend's own (tags, time, seq, quality flags) and refused"
        )
    for child in node.values():
        _reserve_value_names(child)


_NULL: Final = {"type": "null"}
_NOT_NULL: Final = {"not": {"type": "null"}}

# One reading inline, or a batch: null counts as absent (the backend reads both as "not given").
_ONE_FORM: Final = [
    {
        "title": "single reading",
        "required": ["ts", "seq", "values"],
        "properties": {"ts": _NOT_NULL, "seq": _NOT_NULL, "values": _NOT_NULL, "readings": _NULL},
    },
    {
        "title": "batch of readings",
        "required": ["readings"],
        "properties": {"readings": _NOT_NULL, "ts": _NULL, "seq": _NULL, "values": _NULL},
    },
]


def schema_of(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = tighten(SCHEMAS[name].json_schema(by_alias=True))
    if name == TELEMETRY_SCHEMA:
        _reserve_value_names(schema)
        schema["oneOf"] = _ONE_FORM
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://moby.example/schema/{name}.json",
        "title": name,
        "$comment": "Checked by the backend but not expressed here: " + "; ".join(NOT_EXPRESSED[name]) + ".",
        **schema,
    }


def render(name: str) -> str:
    return json.dumps(schema_of(name), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SCHEMAS:
        path = directory / f"{name}.schema.json"
        path.write_text(render(name))
        paths.append(path)
    return paths
