"""Text lines → reading values: ``key=value`` pairs, one JSON object, or a regular expression.

Shared by the serial and command drivers. Only the value names a sensor declares (its ``values``
table, name → unit) are taken from a line; anything else in it is ignored, so a chatty device
cannot add fields (and series cardinality) downstream. A line with none of the declared values,
a value that is not a finite number, or a line longer than the bound is refused with a reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson


class LineFormat(StrEnum):
    KEY_VALUE = "key_value"  # temperature=21.5 humidity=40.2  (separated by spaces, commas or ;)
    JSON = "json"  # {"temperature": 21.5, "humidity": 40.2}
    REGEX = "regex"  # named groups: ^T=(?P<temperature>\S+) H=(?P<humidity>\S+)$


_PAIR_SEPARATORS = re.compile(r"[\s,;]+")


def _number(name: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"{name}: {str(raw)[:40]!r} is not a number")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: {str(raw)[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: {raw!r} is not a finite number")
    return value


@dataclass(frozen=True)
class LineParser:
    """Parses one line (without its line break) into the declared values it carries."""

    format: LineFormat
    names: frozenset[str]
    pattern: re.Pattern[str] | None = None

    @classmethod
    def of(cls, fmt: LineFormat, names: Mapping[str, str], pattern: str | None) -> LineParser:
        return cls(fmt, frozenset(names), re.compile(pattern) if pattern is not None else None)

    def parse(self, line: str) -> dict[str, float]:
        line = line.strip()
        if not line:
            raise ValueError("an empty line")
        if self.format is LineFormat.JSON:
            values = self._json(line)
        elif self.format is LineFormat.REGEX:
            values = self._regex(line)
        else:
            values = self._pairs(line)
        if not values:
            raise ValueError(f"none of the values {sorted(self.names)} in {line[:80]!r}")
        return values

    def _pairs(self, line: str) -> dict[str, float]:
        values: dict[str, float] = {}
        for token in _PAIR_SEPARATORS.split(line):
            key, eq, raw = token.partition("=")
            if eq and key in self.names:
                values[key] = _number(key, raw)
        return values

    def _json(self, line: str) -> dict[str, float]:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ValueError(f"not a JSON object: {line[:80]!r}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"not a JSON object: {line[:80]!r}")
        return {k: _number(k, v) for k, v in obj.items() if k in self.names}

    def _regex(self, line: str) -> dict[str, float]:
        assert self.pattern is not None
        match = self.pattern.search(line)
        if match is None:
            raise ValueError(f"the pattern does not match {line[:80]!r}")
        return {k: _number(k, v) for k, v in match.groupdict().items() if k in self.names and v is not None}


def check_pattern(pattern: str, names: Mapping[str, str]) -> None:
    """A configuration's regex: it compiles and every named group is a declared value."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    groups = set(compiled.groupindex)
    if not groups:
        raise ValueError("needs named groups, e.g. (?P<temperature>[-0-9.]+)")
    unknown = sorted(groups - set(names))
    if unknown:
        raise ValueError(f"groups {unknown} are not in the sensor's values table")
