"""What Grafana does to an exported query before its InfluxDB data source sends it.

Written from Grafana's InfluxDB data source (``datasource.ts``: ``interpolateQueryExpr``,
``getTimeFilter``) and ``kbn.calculateInterval``:

* ``$timeFilter`` → ``time >= <from>ms and time <= <to>ms``;
* ``$__interval`` → the range divided by the panel's max data points, rounded to a "nice"
  interval, and never below the panel's ``interval`` (its minimum);
* a template variable of a multi-value / include-all variable → each value regex-escaped, and
  several as ``(a|b)`` (the form ``=~ /^$var$/`` expects); "All" is every value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# kbn's nice intervals, in ms.
_NICE_MS = [
    1000,
    2000,
    5000,
    10_000,
    15_000,
    20_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_200_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
]
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}/-])")


@dataclass(frozen=True)
class Query:
    where: str  # e.g. "fleet-overview.json panel 3 'Readings per second'"
    text: str
    min_interval: str | None = None


def duration_ms(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    assert m, text
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def format_interval(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


def grafana_interval(range_ms: int, min_interval: str | None, max_data_points: int = 1000) -> str:
    raw = range_ms / max_data_points
    nice = next((n for n in _NICE_MS if n >= raw / 1.5), _NICE_MS[-1])
    if min_interval:
        nice = max(nice, duration_ms(min_interval))
    return format_interval(nice)


def regex_escape(value: str) -> str:
    return _REGEX_SPECIAL.sub(r"\\\1", value)


def substitute(
    query: str,
    *,
    start_ms: int,
    end_ms: int,
    interval: str,
    variables: Mapping[str, Sequence[str]],
) -> str:
    out = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    out = out.replace("$__interval", interval)
    # Longest names first, so that $sensor_id is not read as $sensor followed by "_id".
    for name in sorted(variables, key=len, reverse=True):
        values = [regex_escape(v) for v in variables[name]]
        assert values, f"variable {name} has no values"
        text = values[0] if len(values) == 1 else "(" + "|".join(values) + ")"
        out = out.replace(f"${{{name}}}", text).replace(f"${name}", text)
    # What is left of "$" must be regex end anchors ("...$/"), not macros.
    assert not re.search(r"\$[{\w]", out), f"unsubstituted macro in {out}"
    return out


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(path: Path) -> tuple[list[Query], list[tuple[str, str]]]:
    """Panel queries, and (variable name, query) of the template variables, in order."""
    data = json.loads(path.read_text())
    queries = [
        Query(f"{path.name} panel {p['id']} {p.get('title')!r}", t["query"], p.get("interval"))
        for p in _panels(data.get("panels", []))
        for t in p.get("targets", [])
        if "query" in t
    ]
    variables = [(v["name"], v["query"]) for v in data["templating"]["list"] if v["type"] == "query"]
    return queries, variables


def alert_queries(path: Path, datasource_uid: str = "moby") -> list[Query]:
    doc = yaml.safe_load(path.read_text())
    return [
        Query(f"alert {rule['uid']}", item["model"]["query"])
        for group in doc["groups"]
        for rule in group["rules"]
        for item in rule["data"]
        if item["datasourceUid"] == datasource_uid
    ]
