"""moby.store.bootstrap against a real InfluxDB 1.x: retention policies and the 1-minute rollups."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from moby.store.bootstrap import (
    CQ_1H_PREFIX,
    CQ_PREFIX,
    RAW,
    ROLLUP_1H,
    ROLLUP_1M,
    Bootstrap,
    rollup_1h_select,
    rollup_select,
)
from moby.store.influx import InfluxClient, series_rows
from moby.store.influxd import Influxd

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000


@pytest.fixture
async def client(influxd: Influxd, db_name: str) -> AsyncIterator[InfluxClient]:
    c = InfluxClient(influxd.url, db_name)
    yield c
    try:
        await c.execute(f'DROP DATABASE "{db_name}"', database="")
    finally:
        await c.close()


async def policies(client: InfluxClient) -> dict[str, tuple[str, bool]]:
    results = await client.query(f'SHOW RETENTION POLICIES ON "{client.database}"')
    return {row["name"]: (row["duration"], row["default"]) for row in series_rows(results[0])}


async def continuous_queries(client: InfluxClient) -> dict[str, str]:
    results = await client.query("SHOW CONTINUOUS QUERIES", database="")
    return {
        row["name"]: row["query"] for row in series_rows(results[0]) if row["_measurement"] == client.database
    }


async def rows(client: InfluxClient, rp: str, measurement: str) -> list[dict[str, Any]]:
    q = f'SELECT * FROM "{client.database}"."{rp}"."{measurement}" GROUP BY * ORDER BY time'
    return series_rows((await client.query(q))[0])


def minute_start(minutes_ago: int) -> int:
    now = int(time.time() * 1000)
    return now - now % MINUTE_MS - minutes_ago * MINUTE_MS


async def test_run_is_idempotent(client: InfluxClient) -> None:
    boot = Bootstrap(client)
    await boot.run()
    first = await policies(client)
    assert first[RAW] == ("720h0m0s", True)
    assert first[ROLLUP_1M] == ("8760h0m0s", False)
    assert first[ROLLUP_1H] == ("43800h0m0s", False)  # 5 years
    await boot.run()
    await Bootstrap(client).run()  # a restarted backend
    assert await policies(client) == first
    assert [name for name, (_, default) in first.items() if default] == [RAW]


async def test_a_changed_retention_is_altered(client: InfluxClient) -> None:
    await Bootstrap(client).run()
    await Bootstrap(client, raw_retention="14d", rollup_retention="52w").run()
    got = await policies(client)
    assert got[RAW] == ("336h0m0s", True)
    assert got[ROLLUP_1M] == ("8736h0m0s", False)
    await Bootstrap(client, raw_retention="30d").run()
    assert (await policies(client))[RAW] == ("720h0m0s", True)


@pytest.mark.parametrize("bad", ["30", "thirty days", "30d; DROP DATABASE x", "", "1d 2h"])
def test_bad_retention_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        Bootstrap(InfluxClient("http://127.0.0.1:1", "x"), raw_retention=bad)


async def test_rollups(client: InfluxClient) -> None:
    boot = Bootstrap(client)
    await boot.run()
    assert await boot.reconcile_rollups() == 0  # no data, nothing to roll up

    # Two hours ago, away from the continuous query's own resample window.
    m0 = minute_start(120)
    lines = [
        # minute 0, sensor s1
        f"vibration,factory_id=f1,sensor_id=s1 a=1.0,b=10.0,seq=1i {m0 + 0}",
        f"vibration,factory_id=f1,sensor_id=s1 a=2.0,b=-5.0,seq=2i {m0 + 10_000}",
        f'vibration,factory_id=f1,sensor_id=s1 a=3.5,b=1.0,seq=3i,quality="bad" {m0 + 59_999}',
        # minute 0, sensor s2
        f"vibration,factory_id=f1,sensor_id=s2 a=100.0,b=0.5,seq=7i {m0 + 30_000}",
        # minute 1, sensor s1
        f"vibration,factory_id=f1,sensor_id=s1 a=4.0,b=4.0,seq=4i {m0 + MINUTE_MS}",
        # minute 2: outside the time range executed below
        f"vibration,factory_id=f1,sensor_id=s1 a=99.0,b=99.0,seq=5i {m0 + 2 * MINUTE_MS}",
    ]
    await client.write("\n".join(lines).encode())  # no rp: the database default, which is raw
    assert len(await rows(client, RAW, "vibration")) == 6

    assert await boot.reconcile_rollups() == 1
    cqs = await continuous_queries(client)
    assert set(cqs) == {f"{CQ_PREFIX}vibration", f"{CQ_1H_PREFIX}vibration"}
    query = cqs[f"{CQ_PREFIX}vibration"]
    # InfluxDB shows the query normalised (identifiers unquoted where it can).
    db = client.database
    assert query.startswith(f"CREATE CONTINUOUS QUERY {CQ_PREFIX}vibration ON {db} RESAMPLE EVERY 1m FOR 5m")
    assert f"INTO {db}.{ROLLUP_1M}.vibration FROM {db}.{RAW}.vibration GROUP BY time(1m), *" in query
    for part in ("mean(a) AS a", "min(a) AS a_min", "max(b) AS b_max", "max(seq) AS seq"):
        assert part in query
    assert "quality" not in query  # a string field is not rolled up
    assert await boot.reconcile_rollups() == 0  # nothing changed

    select = rollup_select(client.database, "vibration", ["a", "b", "seq"])
    assert " GROUP BY " in select
    ranged = select.replace(
        " GROUP BY ", f" WHERE time >= {m0}ms AND time < {m0 + 2 * MINUTE_MS}ms GROUP BY ", 1
    )
    await client.execute(ranged)

    got = await rows(client, ROLLUP_1M, "vibration")
    fields = {"a", "a_min", "a_max", "b", "b_min", "b_max", "seq"}
    for row in got:
        assert set(row) - {"time", "factory_id", "sensor_id", "_measurement"} == fields
    by_key = {(r["sensor_id"], r["time"]): r for r in got}
    assert set(by_key) == {("s1", m0), ("s2", m0), ("s1", m0 + MINUTE_MS)}

    s1 = by_key[("s1", m0)]
    assert s1["a"] == pytest.approx((1.0 + 2.0 + 3.5) / 3)
    assert (s1["a_min"], s1["a_max"]) == (1.0, 3.5)
    assert s1["b"] == pytest.approx((10.0 - 5.0 + 1.0) / 3)
    assert (s1["b_min"], s1["b_max"]) == (-5.0, 10.0)
    assert s1["seq"] == 3
    assert s1["factory_id"] == "f1"
    s2 = by_key[("s2", m0)]
    assert (s2["a"], s2["a_min"], s2["a_max"], s2["b"], s2["seq"]) == (100.0, 100.0, 100.0, 0.5, 7)
    later = by_key[("s1", m0 + MINUTE_MS)]
    assert (later["a"], later["b_min"], later["seq"]) == (4.0, 4.0, 4)

    # seq stays an integer field at both resolutions.
    keys = await client.query(f'SHOW FIELD KEYS FROM "{ROLLUP_1M}"."vibration"')
    types = {row["fieldKey"]: row["fieldType"] for row in series_rows(keys[0])}
    assert types == {**{f: "float" for f in fields - {"seq"}}, "seq": "integer"}

    # A field appears later: the continuous query is re-created with it.
    await client.write(f"vibration,factory_id=f1,sensor_id=s3 c=1.5,seq=1i {m0}".encode())
    assert await boot.reconcile_rollups() == 1
    query = (await continuous_queries(client))[f"{CQ_PREFIX}vibration"]
    assert "c_max" in query and "a_max" in query
    assert await boot.reconcile_rollups() == 0

    # A restarted backend re-creates its queries once, without tripping over the existing ones.
    again = Bootstrap(client)
    await again.run()
    assert set(await continuous_queries(client)) == {f"{CQ_PREFIX}vibration", f"{CQ_1H_PREFIX}vibration"}
    assert await again.reconcile_rollups() == 0


async def test_one_query_per_measurement(client: InfluxClient) -> None:
    boot = Bootstrap(client)
    await boot.run()
    m0 = minute_start(60)
    await client.write(
        f"vibration,sensor_id=s1 a=1.0,seq=1i {m0}\nnoise,sensor_id=s2 db=70.0,seq=1i {m0}".encode()
    )
    assert await boot.reconcile_rollups() == 2
    assert set(await continuous_queries(client)) == {
        f"{prefix}{m}" for prefix in (CQ_PREFIX, CQ_1H_PREFIX) for m in ("vibration", "noise")
    }


def test_rollup_select_keeps_names() -> None:
    select = rollup_select("db", "m", ["seq", "x", "x_min"])
    assert select == (
        'SELECT max("seq") AS "seq", mean("x") AS "x", max("x") AS "x_max", '
        'mean("x_min") AS "x_min", min("x_min") AS "x_min_min", max("x_min") AS "x_min_max" '
        'INTO "db"."rollup_1m"."m" FROM "db"."raw"."m" GROUP BY time(1m), *'
    )


async def test_rollups_come_back_after_the_database_is_recreated(client: InfluxClient) -> None:
    """The writer re-bootstraps when the database vanished; its continuous queries went with it."""
    boot = Bootstrap(client)
    await boot.run()
    m0 = minute_start(60)
    await client.write(f"vibration,sensor_id=s1 a=1.0,seq=1i {m0}".encode())
    assert await boot.reconcile_rollups() == 1
    await client.execute(f'DROP DATABASE "{client.database}"', database="")
    await boot.run()
    await client.write(f"vibration,sensor_id=s1 a=1.0,seq=1i {m0}".encode())
    await boot.reconcile_rollups()
    assert set(await continuous_queries(client)) == {f"{CQ_PREFIX}vibration", f"{CQ_1H_PREFIX}vibration"}


async def test_hourly_rollup_from_the_minutes(client: InfluxClient) -> None:
    """rollup_1h keeps the names: the mean of the minute means, the extremes of the extremes."""
    boot = Bootstrap(client)
    await boot.run()
    h0 = minute_start(0) - minute_start(0) % 3_600_000 - 3 * 3_600_000  # three hours ago, whole hour
    lines = [
        f"vibration,factory_id=f1,sensor_id=s1 a={v},seq={i}i {h0 + i * MINUTE_MS + 5_000}"
        for i, v in enumerate([1.0, 3.0, 5.0, 7.0])
    ] + [
        # minute 3 holds 7 and 0; then one point in the next hour
        f"vibration,factory_id=f1,sensor_id=s1 a=0.0,seq=10i {h0 + 3 * MINUTE_MS + 30_000}",
        f"vibration,factory_id=f1,sensor_id=s1 a=100.0,seq=99i {h0 + 3_600_000 + 5_000}",
    ]
    await client.write("\n".join(lines).encode())
    assert await boot.reconcile_rollups() == 1
    query = (await continuous_queries(client))[f"{CQ_1H_PREFIX}vibration"]
    db = client.database
    assert "RESAMPLE EVERY 5m FOR 2h" in query
    assert f"INTO {db}.{ROLLUP_1H}.vibration FROM {db}.{ROLLUP_1M}.vibration GROUP BY time(1h), *" in query
    for part in ("mean(a) AS a", "min(a_min) AS a_min", "max(a_max) AS a_max", "max(seq) AS seq"):
        assert part in query

    # Backfill is what a late edge flush needs: both rollups recomputed over whole hours.
    assert await boot.backfill(h0 + 10 * MINUTE_MS, h0 + 3_600_000 + 1) == 2 * 1  # 2 h < a day: one chunk
    minutes = await rows(client, ROLLUP_1M, "vibration")
    assert [r["a"] for r in minutes] == [1.0, 3.0, 5.0, 3.5, 100.0]
    hours = await rows(client, ROLLUP_1H, "vibration")
    assert [(r["time"], r["a"], r["a_min"], r["a_max"], r["seq"]) for r in hours] == [
        (h0, (1.0 + 3.0 + 5.0 + 3.5) / 4, 0.0, 7.0, 10),
        (h0 + 3_600_000, 100.0, 100.0, 100.0, 99),
    ]
    assert rollup_1h_select("d", "m", ["x", "seq"], 0, 3_600_000) == (
        'SELECT max("seq") AS "seq", mean("x") AS "x", min("x_min") AS "x_min", max("x_max") AS "x_max" '
        'INTO "d"."rollup_1h"."m" FROM "d"."rollup_1m"."m" WHERE time >= 0ms AND time < 3600000ms '
        "GROUP BY time(1h), *"
    )


def energy_mean(levels: list[float]) -> float:
    return 10 * math.log10(sum(10 ** (level / 10) for level in levels) / len(levels))


async def test_each_field_rolls_up_with_its_own_aggregate_in_the_running_queries(
    client: InfluxClient,
) -> None:
    """The continuous queries InfluxDB runs: dB levels → energy mean, zones and peaks → max.

    Readings in closed minutes of the last five, which the 1-minute query's resample window
    covers: the query itself (created, and so first run, after the data) writes the rollup.
    """
    boot = Bootstrap(client)
    await boot.run()
    m0 = minute_start(3)
    laeq = [70.0, 90.0, 75.5, 82.0]
    zones = [1.0, 4.0, 2.0, 2.0]
    peaks = [0.5, 3.25, 1.0, 0.75]
    lines = [
        f"noise,factory_id=f1,sensor_id=n1 laeq={level},lamax={level + 6},seq={i}i {m0 + i * 10_000}"
        for i, level in enumerate(laeq)
    ] + [
        f"vibration,factory_id=f1,sensor_id=v1 iso_zone={z},peak_accel_g={p},rms_velocity={z * 1.5},"
        f"seq={i}i {m0 + i * 10_000}"
        for i, (z, p) in enumerate(zip(zones, peaks, strict=True))
    ]
    await client.write("\n".join(lines).encode())
    assert await boot.reconcile_rollups() == 2

    async def rolled_up() -> dict[str, dict[str, Any]]:
        got: dict[str, dict[str, Any]] = {}
        for measurement in ("noise", "vibration"):
            for row in await rows(client, ROLLUP_1M, measurement):
                if row["time"] == m0:
                    got[measurement] = row
        return got

    deadline = time.monotonic() + 30
    while len(got := await rolled_up()) < 2:
        assert time.monotonic() < deadline, "the continuous queries wrote no rollup for the minute"
        await asyncio.sleep(0.25)
    noise, vibration = got["noise"], got["vibration"]
    assert noise["laeq"] == pytest.approx(energy_mean(laeq), abs=1e-6)
    assert noise["laeq"] == pytest.approx(84.79, abs=0.01)  # the arithmetic mean would be 79.4
    assert (noise["laeq_min"], noise["laeq_max"]) == (70.0, 90.0)
    assert noise["lamax"] == 96.0 and noise["seq"] == 3
    assert vibration["iso_zone"] == 4.0  # zone D, not a fractional 2.25
    assert vibration["peak_accel_g"] == 3.25
    assert vibration["rms_velocity"] == pytest.approx(1.5 * sum(zones) / 4)  # a plain mean
    keys = await client.query(f'SHOW FIELD KEYS FROM "{ROLLUP_1M}"."noise"')
    types = {row["fieldKey"]: row["fieldType"] for row in series_rows(keys[0])}
    assert types["seq"] == "integer" and types["laeq"] == "float"


async def test_backfill_rolls_levels_up_to_the_energy_mean_at_both_resolutions(client: InfluxClient) -> None:
    """``moby rollup backfill`` and the periodic re-roll use the same aggregates as the queries."""
    boot = Bootstrap(client)
    await boot.run()
    h0 = minute_start(0) - minute_start(0) % 3_600_000 - 3 * 3_600_000
    minutes = {0: [60.0, 80.0], 1: [70.0], 2: [50.0, 5000.0]}  # 5000 dB is no sound level
    lines = [
        f"noise,factory_id=f1,sensor_id=n1 laeq={level},seq={m * 10 + k}i {h0 + m * MINUTE_MS + k * 1000}"
        for m, levels in minutes.items()
        for k, level in enumerate(levels)
    ] + [
        f"vibration,factory_id=f1,sensor_id=v1 iso_zone={z},seq={i}i {h0 + i * MINUTE_MS}"
        for i, z in enumerate([3.0, 1.0])
    ]
    await client.write("\n".join(lines).encode())
    await boot.reconcile_rollups()
    assert await boot.backfill(h0, h0 + 3_600_000) == 4  # two measurements, both rollups

    by_minute = {r["time"]: r for r in await rows(client, ROLLUP_1M, "noise")}
    assert by_minute[h0]["laeq"] == pytest.approx(energy_mean([60.0, 80.0]), abs=1e-6)
    assert by_minute[h0 + MINUTE_MS]["laeq"] == 70.0
    # The impossible level is left out of the energy mean (10^500 overflows), not out of the extremes.
    assert by_minute[h0 + 2 * MINUTE_MS]["laeq"] == pytest.approx(50.0)
    assert by_minute[h0 + 2 * MINUTE_MS]["laeq_max"] == 5000.0

    hour = (await rows(client, ROLLUP_1H, "noise"))[0]
    minute_levels = [energy_mean([60.0, 80.0]), 70.0, 50.0]
    assert hour["laeq"] == pytest.approx(energy_mean(minute_levels), abs=1e-6)
    assert (hour["laeq_min"], hour["laeq_max"], hour["seq"]) == (50.0, 5000.0, 21)
    assert (await rows(client, ROLLUP_1H, "vibration"))[0]["iso_zone"] == 3.0


async def test_rollups_only_for_configured_sensor_types_and_the_backends_own(client: InfluxClient) -> None:
    """Made-up measurements (written before the sensor types were configured, or by hand) get no
    continuous queries, and the ones an older backend made for them are dropped."""
    t = minute_start(5)
    lines = [f"made_up_{i},factory_id=f1,sensor_id=s1 a=1.0,seq=1i {t}" for i in range(30)]
    lines += [
        f"vibration,factory_id=f1,sensor_id=s1 a=1.0,seq=1i {t}",
        f"moby_internal,client_id=b1 queue_points=0.0 {t}",
    ]
    await Bootstrap(client).run()  # as before: every measurement rolled up
    await client.write("\n".join(lines).encode())
    await Bootstrap(client).reconcile_rollups()
    assert len(await continuous_queries(client)) == 2 * 32

    boot = Bootstrap(client, sensor_types=("vibration", "noise"))
    await boot.run()  # a restarted backend with the guard
    cqs = await continuous_queries(client)
    assert set(cqs) == {
        f"{prefix}{m}" for prefix in (CQ_PREFIX, CQ_1H_PREFIX) for m in ("vibration", "moby_internal")
    }
    await client.write(f"made_up_new,factory_id=f1,sensor_id=s1 a=1.0,seq=1i {t}".encode())
    assert await boot.reconcile_rollups() == 0
    assert set(await continuous_queries(client)) == set(cqs)
    assert await boot.backfill(t, t + MINUTE_MS) == 2 * 2 * 1  # two measurements, two rollups, one day
