"""The *Pipeline health* dashboard, from the backend's own metrics in InfluxDB (``moby_internal``).

Counters are running totals per backend, so rates are ``non_negative_derivative`` (which also
hides the drop to zero when a backend restarts). All panels read ``"auto"``: the backend's
points are rolled up like sensor data, so a month of history stays cheap.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.builders.dashboard import Dashboard

from moby.dashboards.influxql import AUTO, DATASOURCE, InfluxQL, tag_variable

INTERNAL = f'{AUTO}."moby_internal"'
WHERE = 'WHERE "client_id" =~ /^$client_id$/ AND $timeFilter'
BY_BACKEND = 'GROUP BY time($__interval), "client_id" fill(null)'


def _series(panel_id: int, title: str, query: str, unit: str, description: str = "") -> timeseries.Panel:
    return (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(InfluxQL(query))
        .unit(unit)
        .interval("10s")  # the default report interval: finer buckets would be empty
        .span_nulls(True)
        .height(8)
        .span(12)
    )


def pipeline_health() -> Dashboard:
    def rate(field: str, alias: str) -> str:
        return f'non_negative_derivative(max("{field}"), 1s) AS "{alias}"'

    panels = [
        _series(
            1,
            "Ingest rate",
            f"SELECT {rate('messages_received', 'messages received/s')}, "
            f"{rate('readings_accepted', 'readings accepted/s')}, "
            f"{rate('points_written', 'points written/s')} "
            f"FROM {INTERNAL} {WHERE} {BY_BACKEND}",
            "reqps",
            "MQTT messages in, readings validated and queued, points InfluxDB confirmed.",
        ),
        _series(
            2,
            "Durable queue depth (points)",
            f'SELECT max("queue_points") AS "points" FROM {INTERNAL} {WHERE} {BY_BACKEND}',
            "short",
            "Readings accepted but not yet confirmed by InfluxDB: grows while InfluxDB is slow or away.",
        ),
        _series(
            3,
            "Durable queue size",
            f'SELECT max("queue_bytes") AS "bytes" FROM {INTERNAL} {WHERE} {BY_BACKEND}',
            "bytes",
        ),
        _series(
            4,
            "Dead letters by reason (per minute)",
            'SELECT non_negative_derivative(max("messages"), 1m) AS "dead letters/min" '
            f'FROM {AUTO}."moby_internal_rejected" {WHERE} '
            'GROUP BY time($__interval), "client_id", "reason" fill(null)',
            "short",
            "Messages rejected (bad JSON, schema, identity, time range, ...), kept in the dead-letter store.",
        ),
        _series(
            5,
            "InfluxDB write latency",
            f'SELECT mean("write_latency_s_mean") AS "mean", max("write_latency_s_p95") AS "p95" '
            f"FROM {INTERNAL} {WHERE} {BY_BACKEND}",
            "s",
            "Per report interval; p95 is the upper bound of the histogram bucket holding it.",
        ),
        _series(
            6,
            "End-to-end lag (received → confirmed)",
            f'SELECT mean("e2e_lag_s_mean") AS "mean", max("e2e_lag_s_p95") AS "p95" '
            f"FROM {INTERNAL} {WHERE} {BY_BACKEND}",
            "s",
        ),
        _series(
            7,
            "Points per InfluxDB write",
            f'SELECT mean("batch_points_mean") AS "points/batch" FROM {INTERNAL} {WHERE} {BY_BACKEND}',
            "short",
        ),
    ]
    dead_now = (
        stat.Panel()
        .id(8)
        .title("Dead letters held")
        .datasource(DATASOURCE)
        .with_target(InfluxQL(f'SELECT last("dead_letters") FROM {INTERNAL} {WHERE} GROUP BY "client_id"'))
        .decimals(0)
        .height(8)
        .span(6)
    )
    online = (
        stat.Panel()
        .id(9)
        .title("Sensors online / known")
        .datasource(DATASOURCE)
        .with_target(
            InfluxQL(
                f'SELECT last("sensors_online") AS "online", last("sensors") AS "known" '
                f'FROM {INTERNAL} {WHERE} GROUP BY "client_id"'
            )
        )
        .decimals(0)
        .height(8)
        .span(6)
    )
    dashboard = (
        Dashboard("MOBY · Pipeline health")
        .uid("moby-pipeline")
        .tags(["moby", "operations"])
        .description("The backend's own metrics (measurement moby_internal), one series per backend.")
        .time("now-3h", "now")
        .refresh("30s")
        .with_variable(
            tag_variable(
                "client_id", "Backend", 'SHOW TAG VALUES FROM "moby_internal" WITH KEY = "client_id"'
            )
        )
    )
    for panel in panels:
        dashboard = dashboard.with_panel(panel)
    return dashboard.with_panel(dead_now).with_panel(online)
