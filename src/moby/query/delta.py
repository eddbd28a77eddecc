"""Delta caching, as Trickster does it: keep complete ``GROUP BY time()`` buckets, ask only for the tail.

A dashboard panel over "the last 2 days" asks InfluxDB for 2 days of buckets on every refresh,
although all but the newest bucket or two are the same as a refresh ago. For a statement whose
range reaches to now, the proxy keeps, per *template* (the statement without its time bounds),
the buckets that are complete — they ended before now less the settle time of the policy read —
and asks InfluxDB only for ``time >= <end of the complete buckets>``. The answer is the cached
buckets followed by that tail.

Buckets are aligned as InfluxDB aligns them (multiples of the interval since the epoch), and
the first bucket of an answer is a whole bucket: ``time >= 10:00:17`` with ``time(1m)`` answers
the full 10:00 bucket, as Trickster does, where InfluxDB would average only from 10:00:17.

Eligible: a ``SELECT`` with ``GROUP BY time(<interval>)`` (no offset), a lower time bound, an
upper bound near now (or none), no ``LIMIT``/``OFFSET``/``SLIMIT``/``SOFFSET``/``ORDER BY``/``tz()``,
no subquery, ``fill`` other than ``previous``/``linear``; and the request asks for JSON with
``epoch=ms``, not chunked, without bound parameters (Grafana's requests are like that).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from moby.query import influxql, parser

_ROW_BYTES: Final = 48  # a row's bookkeeping in a dict of lists, roughly
_VALUE_BYTES: Final = 24
MIN_SLACK_MS: Final = 300_000


@dataclass(frozen=True)
class DeltaPart:
    """One statement that may be answered from complete buckets plus a tail query."""

    template: str  # the cache key of its buckets
    interval_ms: int
    first_bucket_ms: int  # the bucket the answer starts with
    span_ms: float
    settle_ms: int
    statement: list[influxql.Token]
    replace: dict[int, str]  # routing's rewrites ("auto" → a policy)
    lower: parser.TimeBound

    def text_from(self, start_ms: int) -> str:
        """The statement asking for ``time >= start_ms`` (its upper bound as it was)."""
        replace = dict(self.replace)
        replace[self.lower.op_index] = ">="
        begin, end = self.lower.span
        replace[begin] = f"{start_ms}ms"
        replace.update({k: "" for k in range(begin + 1, end)})
        return influxql.render(self.statement, replace)


_NOT_ELIGIBLE: Final = frozenset({"LIMIT", "SLIMIT", "OFFSET", "SOFFSET", "ORDER", "TZ"})


def eligible(
    statement: parser.Statement,
    shape: parser.Shape,
    now_ms: float,
    near_now_ms: float,
) -> bool:
    if statement.kind != "SELECT" or statement.clauses & _NOT_ELIGIBLE:
        return False
    if any(s.subquery is not None for s in statement.sources):
        return False
    if statement.fill in ("previous", "linear"):  # carries values across the split
        return False
    if shape.interval_offset:  # time(interval, offset)
        return False
    interval, lower, upper = shape.interval_ms, shape.lower, shape.upper
    if not interval or interval != int(interval) or lower is None or lower.op not in (">", ">="):
        return False
    # only ranges that reach to now: a range in the past is complete and cached whole, for long
    return upper is None or (upper.op in ("<", "<=") and abs(upper.at(now_ms) - now_ms) <= near_now_ms)


@dataclass
class _Series:
    name: str | None
    tags: dict[str, str] | None
    columns: list[str]
    rows: dict[int, list[Any]] = field(default_factory=dict)


@dataclass
class _Entry:
    start: int  # complete buckets are held for [start, end)
    end: int
    series: dict[str, _Series] = field(default_factory=dict)
    size: int = 0
    span_ms: float = 0.0  # the longest range asked of this template: what must be kept
    born: float = 0.0  # when its first buckets were kept (clock seconds)


def _series_key(series: dict[str, Any]) -> str:
    return orjson.dumps([series.get("name"), sorted((series.get("tags") or {}).items())]).decode()


class DeltaCache:
    """Complete buckets per template, least recently used out first past ``max_bytes``."""

    def __init__(
        self, max_bytes: int, max_age_s: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        # Held buckets are asked for again after this long, so data that arrived after they were
        # judged complete (a late edge backfill, a rollup re-roll) shows within it.
        self.max_age_s = max_age_s
        self._clock = clock
        self.bytes = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def covered_until(self, template: str, first_bucket_ms: int) -> int | None:
        """Where the complete buckets held for an answer starting at ``first_bucket_ms`` end."""
        entry = self._entries.get(template)
        if entry is not None and self._clock() - entry.born > self.max_age_s:
            self._drop(template)
            return None
        if entry is None or not entry.start <= first_bucket_ms < entry.end:
            return None
        self._entries.move_to_end(template)
        return entry.end

    def merge(
        self, template: str, fetched_from: int, settled: int, tail: list[dict[str, Any]], span_ms: float
    ) -> None:
        """Keep the complete buckets ``[fetched_from, settled)`` of an answer begun at ``fetched_from``."""
        if settled <= fetched_from:
            return
        entry = self._entries.get(template)
        if entry is None or fetched_from > entry.end or settled < entry.start:
            if entry is not None:
                self._drop(template)
            entry = self._entries[template] = _Entry(fetched_from, fetched_from, born=self._clock())
        for series in tail:
            key = _series_key(series)
            held = entry.series.get(key)
            if held is None or held.columns != series["columns"]:
                if held is not None:  # the statement's columns changed: start over
                    self._drop(template)
                    self.merge(template, fetched_from, settled, tail, span_ms)
                    return
                held = entry.series[key] = _Series(series.get("name"), series.get("tags"), series["columns"])
            for row in series.get("values", []):
                if fetched_from <= row[0] < settled and row[0] not in held.rows:
                    held.rows[row[0]] = row
                    entry.size += _ROW_BYTES + _VALUE_BYTES * len(row)
        entry.start, entry.end = min(entry.start, fetched_from), max(entry.end, settled)
        # The windows move on: keep what the longest view asked of this template still needs, and
        # some slack for users whose refresh lags behind.
        entry.span_ms = max(entry.span_ms, span_ms)
        keep_from = int(entry.end - entry.span_ms - max(entry.span_ms / 10, MIN_SLACK_MS))
        if keep_from > entry.start:  # the windows moved on: older buckets are no longer asked for
            for held in entry.series.values():
                for t in [t for t in held.rows if t < keep_from]:
                    entry.size -= _ROW_BYTES + _VALUE_BYTES * len(held.rows.pop(t))
            entry.start = keep_from
        self._entries.move_to_end(template)
        self.bytes = sum(e.size for e in self._entries.values())
        while self.bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    def assemble(
        self, template: str, first_bucket_ms: int, fetched_from: int, tail: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], int]:
        """The answer's series: held buckets ``[first, fetched_from)`` then the tail; and how many
        rows came from the cache."""
        entry = self._entries.get(template)
        merged: dict[str, dict[str, Any]] = {}
        from_cache = 0
        if entry is not None and fetched_from > first_bucket_ms:
            for key, held in entry.series.items():
                rows = [held.rows[t] for t in sorted(held.rows) if first_bucket_ms <= t < fetched_from]
                if rows:
                    merged[key] = {
                        "name": held.name,
                        "tags": held.tags,
                        "columns": held.columns,
                        "values": rows,
                    }
                    from_cache += len(rows)
        for series in tail:
            key = _series_key(series)
            rows = [row for row in series.get("values", []) if row[0] >= fetched_from]
            if key in merged:
                merged[key]["values"].extend(rows)
            elif rows:
                merged[key] = {**series, "values": rows}
        out = []
        for _, series in sorted(merged.items()):
            out.append({k: v for k, v in series.items() if v is not None})
        return out, from_cache

    def _drop(self, template: str) -> None:
        entry = self._entries.pop(template, None)
        if entry is not None:
            self.bytes -= entry.size
