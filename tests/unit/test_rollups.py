"""The field → aggregate table (moby.schema.rollups) and the InfluxQL it becomes (moby.store.aggregation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moby.dashboards.export import ExportSettings, export
from moby.dashboards.fleet import SIMULATED_UNITS
from moby.edge.features import UNITS
from moby.schema.rollups import (
    FIELD_AGGREGATES,
    Aggregate,
    aggregate_for,
    explain,
)
from moby.store.aggregation import Column, aggregate_sql
from moby.store.bootstrap import rollup_select

MEAN, MAX, MIN, ENERGY = Aggregate.MEAN, Aggregate.MAX, Aggregate.MIN, Aggregate.ENERGY_MEAN


@pytest.mark.parametrize(
    ("field", "aggregate"),
    [
        # what the shipped drivers send
        ("rms_velocity", MEAN),
        ("rms_velocity_10_100hz", MEAN),
        ("temperature", MEAN),
        ("humidity", MEAN),
        ("crest_factor", MEAN),
        ("iso_zone", MAX),
        ("peak_accel_g", MAX),
        ("peak_accel_m_s2", MAX),
        ("laeq", ENERGY),
        ("lamax", MAX),
        ("seq", MAX),
        # the naming rules, for sensor types added later
        ("lceq", ENERGY),
        ("lafeq", ENERGY),
        ("lzmax", MAX),
        ("lcpeak", MAX),
        ("lasmin", MIN),
        ("spl_db", ENERGY),
        ("motor_leq", ENERGY),
        ("peak_velocity", MAX),
        ("velocity_peak", MAX),
        ("severity_zone", MAX),
        ("latency_p95", MAX),
        # names that only look alike stay means
        ("lamp_current", MEAN),
        ("decibel_meter_battery", MEAN),
        ("peakiness", MEAN),
        ("zone_temperature", MEAN),
    ],
)
def test_each_field_has_the_aggregate_that_is_true_for_it(field: str, aggregate: Aggregate) -> None:
    assert aggregate_for(field) is aggregate
    assert explain(field)[1]  # every answer says why


def test_the_backends_own_running_totals_roll_up_as_their_last_value() -> None:
    assert aggregate_for("messages_received", "moby_internal") is MAX
    assert aggregate_for("received_telemetry", "moby_internal") is MAX
    assert aggregate_for("messages", "moby_internal_rejected") is MAX
    # ...only in the backend's own measurements: a sensor's value of that name is averaged
    assert aggregate_for("messages_received", "vibration") is MEAN
    assert aggregate_for("received_power", "vibration") is MEAN
    assert aggregate_for("queue_points", "moby_internal") is MEAN


def test_every_listed_field_is_one_a_driver_sends() -> None:
    """The table names real value names (a typo would silently leave a field averaged)."""
    sent = set(UNITS) | {f for fields in SIMULATED_UNITS.values() for f in fields} | {"seq"}
    assert set(FIELD_AGGREGATES) <= sent


def test_a_measurement_without_levels_keeps_the_plain_statement() -> None:
    columns = [Column(MEAN, "x", "x"), Column(MAX, "iso_zone", "iso_zone")]
    assert aggregate_sql(columns, '"d"."raw"."m"', where="time > 0", outer_where="time > 0") == (
        'mean("x") AS "x", max("iso_zone") AS "iso_zone"',
        'FROM "d"."raw"."m" WHERE time > 0',
    )


def test_a_level_in_db_is_averaged_as_energy_over_a_subquery_of_its_own() -> None:
    columns = [Column(ENERGY, "laeq", "laeq"), Column(MAX, "laeq", "laeq_max"), Column(MAX, "seq", "seq")]
    expressions, from_ = aggregate_sql(columns, '"d"."raw"."noise"', where="w", outer_where="t")
    assert (
        expressions
        == '10 * log10(mean("laeq:energy")) AS "laeq", max("laeq") AS "laeq_max", max("seq") AS "seq"'
    )
    assert from_ == (
        'FROM (SELECT "laeq", "seq" FROM "d"."raw"."noise" WHERE w GROUP BY *), '
        '(SELECT pow(10, "laeq" / 10) AS "laeq:energy" FROM "d"."raw"."noise" '
        'WHERE w AND "laeq" >= -1000 AND "laeq" <= 1000 GROUP BY *) WHERE t'
    )


def test_the_rollup_statement_of_a_noise_sensor() -> None:
    select = rollup_select("d", "noise", ["laeq", "lamax", "seq"])
    assert select.startswith(
        'SELECT 10 * log10(mean("laeq:energy")) AS "laeq", min("laeq") AS "laeq_min", '
        'max("laeq") AS "laeq_max", max("lamax") AS "lamax", min("lamax") AS "lamax_min", '
        'max("lamax") AS "lamax_max", max("seq") AS "seq" INTO "d"."rollup_1m"."noise" '
        'FROM (SELECT "laeq", "lamax", "seq" FROM "d"."raw"."noise" GROUP BY *), '
    )
    assert select.endswith(" GROUP BY *) GROUP BY time(1m), *")  # the continuous query adds the time range


def test_sensor_detail_summarises_each_field_with_its_aggregate(tmp_path: Path) -> None:
    export(tmp_path, ExportSettings())
    data = json.loads((tmp_path / "dashboards" / "moby" / "sensor-detail.json").read_text())
    queries = {
        p["title"]: p["targets"][0]["query"]
        for row in data["panels"]
        for p in [row, *row.get("panels", [])]
        if p.get("targets")
    }
    assert queries["noise · laeq"].startswith(
        'SELECT 10 * log10(mean("laeq:energy")) AS "laeq" FROM (SELECT pow('
    )
    assert queries["noise · lamax"].startswith('SELECT max("lamax") AS "lamax" FROM "auto"."noise"')
    assert queries["vibration · iso_zone"].startswith('SELECT max("iso_zone")')
    assert queries["vibration · peak_accel_g"].startswith('SELECT max("peak_accel_g")')
    assert queries["temperature · temperature"].startswith('SELECT mean("temperature")')
    for text in queries.values():
        assert text.endswith('WHERE $timeFilter GROUP BY time($__interval), "sensor_id" fill(null)') or (
            "FROM (" not in text and text.endswith('GROUP BY time($__interval), "sensor_id" fill(null)')
        )
