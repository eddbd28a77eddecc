"""The InfluxQL behind ``/api/v1/sensors/{id}/readings`` and the shaping of its answer.

Every resolution answers with the same names: raw stores ``x``; both rollups store the bucket
mean as ``x`` with ``x_min``/``x_max`` beside it (see :mod:`moby.store.bootstrap`). Averaging
further into ``max_points`` buckets keeps the names too: ``mean(x) AS x``, and the extremes of
the extremes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moby.ingest.registry import SensorRecord
from moby.store.bootstrap import RAW
from moby.store.influx import quote_ident, quote_string, series_rows


def _columns(policy: str, names: list[str], step_ms: int | None, extremes: bool) -> list[str]:
    columns: list[str] = []
    for name in names:
        q = quote_ident(name)
        if name == "seq":
            columns.append(f"max({q}) AS {q}" if step_ms else q)
            continue
        low, high = (q, q) if policy == RAW else (quote_ident(f"{name}_min"), quote_ident(f"{name}_max"))
        if step_ms:
            columns.append(f"mean({q}) AS {q}")
            if extremes:
                columns += [
                    f"min({low}) AS {quote_ident(name + '_min')}",
                    f"max({high}) AS {quote_ident(name + '_max')}",
                ]
        else:
            columns.append(q)
            if extremes and policy != RAW:
                columns += [low, high]
    return columns


def readings_query(
    database: str,
    policy: str,
    record: SensorRecord,
    names: list[str],
    start_ms: int,
    end_ms: int,
    step_ms: int | None,
    extremes: bool,
    limit: int,
) -> str:
    assert record.sensor_type is not None
    source = f"{quote_ident(database)}.{quote_ident(policy)}.{quote_ident(record.sensor_type)}"
    group = f" GROUP BY time({step_ms}ms) fill(none)" if step_ms else ""
    return (
        f"SELECT {', '.join(_columns(policy, names, step_ms, extremes))} FROM {source} "
        # ::tag: a field of the same name (written before such names were refused) must not
        # take the tag's place in the comparison.
        f'WHERE "factory_id"::tag = {quote_string(record.factory_id)} '
        f'AND "sensor_id"::tag = {quote_string(record.sensor_id)} '
        f"AND time >= {start_ms}ms AND time <= {end_ms}ms{group} "
        f"ORDER BY time ASC LIMIT {limit}"
    )


def shape_points(
    result: dict[str, Any],
    names: list[str],
    extremes: bool,
    raw_rows: bool,
    iso: Callable[[int], str | None],
) -> list[dict[str, Any]]:
    """Rows to points: ``time`` as RFC 3339 and one key per field; empty buckets and nulls left out."""
    points: list[dict[str, Any]] = []
    for row in series_rows(result):
        point: dict[str, Any] = {"time": iso(row["time"])}
        for name in names:
            value = row.get(name)
            if value is not None:
                point[name] = value
            if extremes and name != "seq":
                for agg in ("min", "max"):
                    extreme = value if raw_rows else row.get(f"{name}_{agg}")
                    if extreme is not None:
                        point[f"{name}_{agg}"] = extreme
        if len(point) > 1:
            points.append(point)
    return points
