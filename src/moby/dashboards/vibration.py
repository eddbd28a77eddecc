"""The *Vibration* dashboard: RMS velocity against the ISO 10816 zone limits of a machine class.

Grafana thresholds are fixed numbers per panel, and the backend does not know which class each
machine belongs to, so the export is made for one class (``--machine-class``, default
``class_ii``: 15–75 kW machines, what the simulated fleet models); a table lists the limits of
every class for reference. Sensors that compute ``iso_zone`` themselves (``moby edge`` does,
with each machine's configured class) are not re-graded here.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, text, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode

from moby.dashboards.fleet import zone_mappings, zone_thresholds
from moby.dashboards.influxql import (
    AUTO,
    DATASOURCE,
    FACTORY,
    SENSOR,
    InfluxQL,
    factory_variable,
    sensor_variable,
)
from moby.edge.features import ZONE_LIMITS_MM_S, MachineClass


def limits_markdown(selected: MachineClass) -> str:
    lines = [
        "Zone boundaries in mm/s RMS (ISO 10816-1 classes, ISO 10816-3 groups). "
        "A: new machine; B: unrestricted long-term operation; C: restricted operation; D: damage likely.",
        "",
        "| machine class | A/B | B/C | C/D |",
        "|---|---|---|---|",
    ]
    for cls, (ab, bc, cd) in ZONE_LIMITS_MM_S.items():
        name = f"**{cls.value}** (these panels)" if cls == selected else cls.value
        lines.append(f"| {name} | {ab} | {bc} | {cd} |")
    return "\n".join(lines)


def vibration(machine_class: MachineClass) -> Dashboard:
    over_time = (
        timeseries.Panel()
        .id(1)
        .title(f"RMS velocity with ISO 10816 zones ({machine_class.value})")
        .datasource(DATASOURCE)
        .with_target(
            InfluxQL(
                f'SELECT mean("rms_velocity") AS "rms_velocity" FROM {AUTO}."vibration" '
                f"WHERE {FACTORY} AND {SENSOR} AND $timeFilter "
                'GROUP BY time($__interval), "sensor_id" fill(null)'
            )
        )
        .unit("velocitymms")
        .min(0)
        .thresholds(zone_thresholds(machine_class))
        .thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE_AND_AREA))
        .span_nulls(True)
        .height(12)
        .span(24)
    )
    latest = (
        bargauge.Panel()
        .id(2)
        .title("Zone now, per sensor")
        .description("The last RMS velocity of each sensor in the range, as its ISO zone.")
        .datasource(DATASOURCE)
        .with_target(
            InfluxQL(
                f'SELECT last("rms_velocity") AS "rms_velocity" FROM {AUTO}."vibration" '
                f'WHERE {FACTORY} AND {SENSOR} AND $timeFilter GROUP BY "sensor_id"'
            )
        )
        .unit("velocitymms")
        .min(0)
        .max(ZONE_LIMITS_MM_S[machine_class][2] * 1.5)
        .thresholds(zone_thresholds(machine_class))
        .mappings(list(zone_mappings(machine_class)))
        .height(10)
        .span(12)
    )
    peak = (
        timeseries.Panel()
        .id(3)
        .title("Peak acceleration")
        .datasource(DATASOURCE)
        .with_target(
            InfluxQL(
                f'SELECT max("peak_accel_g") AS "peak_accel_g" FROM {AUTO}."vibration" '
                f"WHERE {FACTORY} AND {SENSOR} AND $timeFilter "
                'GROUP BY time($__interval), "sensor_id" fill(null)'
            )
        )
        .unit("accG")
        .span_nulls(True)
        .height(10)
        .span(12)
    )
    limits = text.Panel().id(4).title("ISO 10816 zone limits").content(limits_markdown(machine_class))
    return (
        Dashboard("MOBY · Vibration")
        .uid("moby-vibration")
        .tags(["moby", "vibration"])
        .description(f"RMS vibration velocity against the ISO 10816 zones of {machine_class.value}.")
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(factory_variable())
        .with_variable(sensor_variable("vibration"))
        .with_panel(over_time)
        .with_panel(latest)
        .with_panel(peak)
        .with_panel(limits.height(10).span(24))
    )
