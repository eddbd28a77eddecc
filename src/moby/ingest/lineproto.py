"""InfluxDB line protocol: escaping and encoding of readings.

Rules (InfluxDB 1.x–3.x): measurement names escape commas and spaces; tag keys, tag values and
field keys escape commas, equals signs and spaces; string field values are double-quoted with
``"`` and ``\\`` escaped. Newlines cannot be escaped anywhere, so they are refused. Tags are
sorted by key (what InfluxDB asks for best write performance). Floats are written with
``repr`` (shortest round-trip form); integers carry the ``i`` suffix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import orjson

_MEASUREMENT: Final = str.maketrans({",": r"\,", " ": r"\ "})
_KEY: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING: Final = str.maketrans({'"': r"\"", "\\": r"\\"})


class LineProtocolError(ValueError):
    """A name or value that line protocol cannot carry."""


def _check(text: str, what: str) -> str:
    if not text:
        raise LineProtocolError(f"{what} is empty")
    if "\n" in text or "\r" in text:
        raise LineProtocolError(f"{what} contains a line break")
    if "\\" in text:
        # InfluxDB 1.x reads "\\," as an escaped comma, not a backslash and a delimiter, and has
        # no way to write a literal backslash before an escapable character: refuse them all.
        raise LineProtocolError(f"{what} contains a backslash")
    return text


def escape_measurement(name: str) -> str:
    if name.startswith("#"):
        raise LineProtocolError("a measurement starting with '#' would make the line a comment")
    return _check(name, "measurement").translate(_MEASUREMENT)


def escape_key(key: str) -> str:
    """Escape a tag key, tag value or field key."""
    return _check(key, "key").translate(_KEY)


def escape_string_field(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise LineProtocolError("string field contains a line break")
    return '"' + value.translate(_STRING) + '"'


def series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,tag=v,...`` with tags sorted by key; empty tag values are left out."""
    parts = [escape_measurement(measurement)]
    parts.extend(f"{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v != "")
    return ",".join(parts)


def format_field(value: float | int | bool | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise LineProtocolError("non-finite float")
        return repr(value)
    return escape_string_field(value)


def encode_fields(fields: Iterable[tuple[str, float | int | bool | str]]) -> str:
    body = ",".join(f"{escape_key(k)}={format_field(v)}" for k, v in fields)
    if not body:
        raise LineProtocolError("a point needs at least one field")
    return body


def encode_point(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, float | int | bool | str],
    timestamp: int,
) -> str:
    """One line (without the trailing newline)."""
    return f"{series_key(measurement, tags)} {encode_fields(fields.items())} {int(timestamp)}"


# Readings' values become fields straight from their JSON rendering: orjson writes a reading's
# values as ``{"a":1.5,"b":2.0}``. Value names match the contract's ``^[a-z][a-z0-9_]*$`` and
# values are finite numbers, so nothing in that text needs escaping, and JSON's number syntax is
# a subset of line protocol's float syntax (no ``i`` suffix: a float, even ``2``). Dropping the
# quotes and turning ``:`` into ``=`` gives the fields, ``a=1.5,b=2.0``, with the float formatting
# done in Rust (~10x faster than ``repr`` per value, which dominated encoding).


# The JSON rendering of one reading's values, or of a list of them, for the functions below.
values_json: Final = orjson.dumps


def name_marker(name: str) -> bytes:
    """What marks ``name`` as a value name in :data:`values_json`'s output (``b'"name":'``)."""
    return f'"{name}":'.encode()


def fields_from_json(rendered: bytes) -> bytes:
    """One reading's fields from ``values_json(values)``."""
    return rendered[1:-1].replace(b'"', b"").replace(b":", b"=")


def fields_from_json_list(rendered: bytes) -> list[bytes]:
    """Each reading's fields from ``values_json([values, ...])`` (a non-empty list)."""
    return rendered[2:-2].replace(b'"', b"").replace(b":", b"=").split(b"},{")
