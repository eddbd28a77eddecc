"""The *Fleet overview* and *Sensor detail* dashboards.

Fleet overview reads only the 1-minute rollups (and the backend's per-sensor status points,
themselves rolled up): it is the page left open on a wall screen, so it must stay cheap over
any range. Sensor detail reads every field through the ``"auto"`` policy, so the same panel
shows rollups when zoomed out and raw readings when zoomed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Dashboard, FieldColor, Row, ThresholdsConfig
from grafana_foundation_sdk.models.dashboard import (
    DashboardRangeMapOptions,
    FieldColorModeId,
    RangeMap,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)

from moby.dashboards.influxql import (
    AUTO,
    DATASOURCE,
    FACTORY,
    ROLLUP,
    SENSOR,
    InfluxQL,
    factory_variable,
    sensor_variable,
)
from moby.edge.drivers import SimulatedHumidity, SimulatedNoise, SimulatedTemperature, SimulatedVibration
from moby.edge.features import ZONE_LIMITS_MM_S, MachineClass
from moby.schema.rollups import aggregate_for
from moby.store.aggregation import Column, aggregate_sql
from moby.store.influx import quote_ident

# What the shipped (simulated) drivers send: measurement → field → unit.
SIMULATED_UNITS: Final[Mapping[str, Mapping[str, str]]] = {
    driver.sensor_type: dict(driver.units)
    for driver in (SimulatedVibration, SimulatedTemperature, SimulatedHumidity, SimulatedNoise)
}

# Contract unit strings → Grafana unit ids.
GRAFANA_UNITS: Final[Mapping[str, str]] = {
    "mm/s": "velocitymms",
    "degC": "celsius",
    "%RH": "humidity",
    "dB(A)": "dB",
    "g": "accG",
    "m/s2": "accMS2",
    "Hz": "hertz",
    "1": "none",
}
ZONE_COLORS: Final = ("green", "#EAB839", "orange", "red")
STATUS = "moby_sensor_status"


def zone_thresholds(machine_class: MachineClass) -> ThresholdsConfig:
    """ISO 10816 zones A–D of a machine class as Grafana threshold steps (mm/s)."""
    ab, bc, cd = ZONE_LIMITS_MM_S[machine_class]
    steps = [Threshold(value=None, color=ZONE_COLORS[0])]
    steps += [Threshold(value=v, color=c) for v, c in zip((ab, bc, cd), ZONE_COLORS[1:], strict=True)]
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def zone_mappings(machine_class: MachineClass) -> list[RangeMap]:
    """Show a velocity as its zone letter: 'A' up to the A/B limit, ... 'D' above C/D."""
    lows = (0.0, *ZONE_LIMITS_MM_S[machine_class])
    highs = (*ZONE_LIMITS_MM_S[machine_class], None)
    return [
        RangeMap(DashboardRangeMapOptions(lo, hi, ValueMappingResult(text=f"zone {z}", color=color)))
        for lo, hi, z, color in zip(lows, highs, "ABCD", ZONE_COLORS, strict=True)
    ]


def fleet_overview(machine_class: MachineClass) -> Dashboard:
    latest_status = (
        f'SELECT last("online") AS "online" FROM {ROLLUP}."{STATUS}" '
        f'WHERE {FACTORY} AND $timeFilter GROUP BY "sensor_id"'
    )
    online = (
        stat.Panel()
        .id(1)
        .datasource(DATASOURCE)
        .title("Sensors online")
        .description("Sensors whose last status (rolled up per minute) said online.")
        .with_target(InfluxQL(f'SELECT sum("online") FROM ({latest_status})'))
        .decimals(0)
        .color_scheme(FieldColor().mode(FieldColorModeId.FIXED).fixed_color("green"))
        .height(5)
        .span(6)
    )
    offline = (
        stat.Panel()
        .id(2)
        .datasource(DATASOURCE)
        .title("Sensors offline")
        .description("Known sensors not online: Last Will, offline status, or silent for 5 minutes.")
        .with_target(InfluxQL(f'SELECT count("online") - sum("online") FROM ({latest_status})'))
        .decimals(0)
        .thresholds(
            ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=None, color="green"), Threshold(value=1, color="red")])
        )
        .height(5)
        .span(6)
    )
    # seq counts +1 per reading, so the rate of its per-minute maximum is readings per second.
    per_sensor_rate = (
        f'SELECT non_negative_derivative(max("seq"), 1s) AS "rate" FROM {ROLLUP}./.*/ '
        f'WHERE {FACTORY} AND $timeFilter GROUP BY time($__interval), "sensor_id"'
    )
    rate = (
        timeseries.Panel()
        .id(3)
        .datasource(DATASOURCE)
        .title("Readings per second")
        .description("Sum over the selected factories' sensors, from the 1-minute rollups.")
        .with_target(
            InfluxQL(
                f'SELECT sum("rate") AS "readings/s" FROM ({per_sensor_rate}) GROUP BY time($__interval)'
            )
        )
        .interval("1m")
        .unit("reqps")
        .height(5)
        .span(12)
    )
    sensors = (
        table.Panel()
        .id(4)
        .datasource(DATASOURCE)
        .title("Sensors: online state and last seen")
        .description("Time = the last status point; last_seen_age_s = seconds since the sensor was heard.")
        .with_target(
            InfluxQL(
                f'SELECT last("online") AS "online", last("last_seen_age_s") AS "last_seen_age_s", '
                f'last("readings") AS "readings" FROM {ROLLUP}."{STATUS}" WHERE {FACTORY} AND $timeFilter '
                f'GROUP BY "factory_id", "sensor_id", "sensor_type"',
                result_format="table",
            )
        )
        .mappings(
            [
                ValueMap(
                    {
                        "1": ValueMappingResult(text="online", color="green"),
                        "0": ValueMappingResult(text="offline", color="red"),
                    }
                )
            ]
        )
        .height(10)
        .span(14)
    )
    worst_zone = (
        table.Panel()
        .id(5)
        .datasource(DATASOURCE)
        .title(f"Worst vibration zone per machine (ISO 10816, {machine_class.value})")
        .description(
            "The highest 1-minute mean RMS velocity of each machine in the range, graded into "
            f"ISO 10816 zones with the limits of {machine_class.value}."
        )
        .with_target(
            InfluxQL(
                f'SELECT max("rms_velocity") AS "rms_velocity" FROM {ROLLUP}."vibration" '
                f'WHERE {FACTORY} AND $timeFilter GROUP BY "machine_id"',
                result_format="table",
            )
        )
        .unit("velocitymms")
        .thresholds(zone_thresholds(machine_class))
        .mappings(list(zone_mappings(machine_class)))
        .height(10)
        .span(10)
    )
    return (
        Dashboard("MOBY · Fleet overview")
        .uid("moby-fleet")
        .tags(["moby"])
        .description("Sensors online, readings per second and vibration zones — all from rollups.")
        .time("now-24h", "now")
        .refresh("1m")
        .with_variable(factory_variable())
        .with_panel(online)
        .with_panel(offline)
        .with_panel(rate)
        .with_panel(sensors)
        .with_panel(worst_zone)
    )


def field_query(measurement: str, field: str) -> str:
    """One field per sensor over time, summarised with the field's own aggregate (the mean; the
    maximum of zones and peaks; the energy mean of levels in dB), at every resolution."""
    column = Column(aggregate_for(field, measurement), field, field)
    source = f"{AUTO}.{quote_ident(measurement)}"
    expressions, from_ = aggregate_sql(
        [column], source, where=f"{FACTORY} AND {SENSOR} AND $timeFilter", outer_where="$timeFilter"
    )
    return f'SELECT {expressions} {from_} GROUP BY time($__interval), "sensor_id" fill(null)'


def sensor_detail(units: Mapping[str, Mapping[str, str]] = SIMULATED_UNITS) -> Dashboard:
    """One row per sensor type, one panel per field: ``units`` is type → field → unit."""
    dashboard = (
        Dashboard("MOBY · Sensor detail")
        .uid("moby-sensor")
        .tags(["moby"])
        .description('Every field over time through the "auto" policy: raw when zoomed in, rollups out.')
        .time("now-1h", "now")
        .refresh("30s")
        .with_variable(factory_variable())
        .with_variable(sensor_variable())
    )
    # The first type's panels sit open at the top; the others in collapsed rows, so a dashboard
    # opened for one vibration sensor does not also run every other type's queries.
    panel_id = 100
    for index, (measurement, fields) in enumerate(units.items()):
        panels = []
        for field, unit in fields.items():
            panel_id += 1
            panels.append(
                timeseries.Panel()
                .id(panel_id)
                .title(f"{measurement} · {field}")
                .datasource(DATASOURCE)
                .with_target(InfluxQL(field_query(measurement, field)))
                .unit(GRAFANA_UNITS.get(unit, "none"))
                .span_nulls(True)
                .height(8)
                .span(12)
            )
        if index == 0:
            for panel in panels:
                dashboard = dashboard.with_panel(panel)
            continue
        panel_id += 1
        row = Row(measurement).id(panel_id).collapsed(True)
        for panel in panels:
            row = row.with_panel(panel)
        dashboard = dashboard.with_row(row)
    return dashboard
