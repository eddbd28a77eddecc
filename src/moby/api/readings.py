"""The InfluxQL behind ``/api/v1/sensors/{id}/readings`` and the shaping of its answer.

Every resolution answers with the same names: raw stores ``x``; both rollups store the bucket's
aggregate of ``x`` (the mean, or what :mod:`moby.schema.rollups` says is true for the field) as
``x`` with ``x_min``/``x_max`` beside it (see :mod:`moby.store.bootstrap`). Summarising further
into ``max_points`` buckets keeps the names and the aggregates, and takes the extremes of the
extremes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moby.ingest.registry import SensorRecord
from moby.schema.rollups import Aggregate, aggregate_for
from moby.store.aggregation import Column, aggregate_sql
from moby.store.bootstrap import RAW
from moby.store.influx import quote_ident, quote_string, series_rows


def _columns(policy: str, names: list[str], extremes: bool) -> list[str]:
    """The columns of points as stored (no bucketing)."""
    columns: list[str] = []
    for name in names:
        columns.append(quote_ident(name))
        if extremes and policy != RAW and name != "seq":
            columns += [quote_ident(f"{name}_min"), quote_ident(f"{name}_max")]
    return columns


def _aggregates(policy: str, measurement: str, names: list[str], extremes: bool) -> list[Column]:
    """The columns of equal time buckets: each field's own aggregate, the extremes of the extremes."""
    columns: list[Column] = []
    for name in names:
        columns.append(Column(aggregate_for(name, measurement), name, name))
        if extremes and name != "seq":
            low, high = (name, name) if policy == RAW else (f"{name}_min", f"{name}_max")
            columns += [
                Column(Aggregate.MIN, low, f"{name}_min"),
                Column(Aggregate.MAX, high, f"{name}_max"),
            ]
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
    during = f"time >= {start_ms}ms AND time <= {end_ms}ms"
    # ::tag: a field of the same name (written before such names were refused) must not take the
    # tag's place in the comparison.
    where = (
        f'"factory_id"::tag = {quote_string(record.factory_id)} '
        f'AND "sensor_id"::tag = {quote_string(record.sensor_id)} AND {during}'
    )
    order = f"ORDER BY time ASC LIMIT {limit}"
    if not step_ms:
        return f"SELECT {', '.join(_columns(policy, names, extremes))} FROM {source} WHERE {where} {order}"
    columns = _aggregates(policy, record.sensor_type, names, extremes)
    expressions, from_ = aggregate_sql(columns, source, where=where, outer_where=during)
    return f"SELECT {expressions} {from_} GROUP BY time({step_ms}ms) fill(none) {order}"


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


# Values that are not readings of the sensor's quantities: the sequence number (answered on its
# own) and the backend's quality code.
_NOT_VALUES = frozenset({"seq", "qc"})


def latest_query(
    database: str, measurements: list[str], window_s: int, factory_id: str | None, limit: int
) -> str:
    """One statement per measurement: the newest raw point of each sensor in the window."""
    only = f" AND factory_id = {quote_string(factory_id)}" if factory_id else ""
    return ";".join(
        f"SELECT * FROM {quote_ident(database)}.{quote_ident(RAW)}.{quote_ident(m)} "
        f"WHERE time > now() - {window_s}s{only} GROUP BY factory_id, sensor_id "
        f"ORDER BY time DESC LIMIT 1 SLIMIT {limit}"
        for m in measurements
    )


def shape_latest(
    results: list[dict[str, Any]], measurements: list[str], iso: Callable[[int], str | None]
) -> list[dict[str, Any]]:
    """Each sensor's newest point: numeric fields as ``values`` (tags and strings left out)."""
    items: list[dict[str, Any]] = []
    for measurement, result in zip(measurements, results, strict=True):
        for series in result.get("series", []):
            tags = series.get("tags", {})
            row = dict(zip(series["columns"], series["values"][0], strict=True))
            values = {
                k: float(v)
                for k, v in row.items()
                if k != "time"
                and k not in _NOT_VALUES
                and isinstance(v, int | float)
                and not isinstance(v, bool)
            }
            seq = row.get("seq")
            items.append(
                {
                    "factory_id": tags.get("factory_id", ""),
                    "sensor_id": tags.get("sensor_id", ""),
                    "measurement": measurement,
                    "time": iso(row["time"]),
                    "seq": seq if isinstance(seq, int) else None,
                    "values": values,
                }
            )
    return sorted(items, key=lambda i: (i["factory_id"], i["sensor_id"]))
