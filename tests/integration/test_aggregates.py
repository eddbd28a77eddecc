"""Every stage summarises a field the same way, against a real InfluxDB 1.6.

The rollups (continuous queries and backfill), the Sensor detail dashboard and the readings
API's ``max_points`` buckets all read :mod:`moby.schema.rollups`: levels in dB → energy mean,
zones and peaks → maximum, the rest → mean. One minute of known readings is summarised by each
and must come out the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from moby.api.readings import readings_query, shape_points
from moby.dashboards.fleet import field_query
from moby.ingest.registry import SensorRecord
from moby.store.bootstrap import RAW, ROLLUP_1M, Bootstrap
from moby.store.influx import InfluxClient, series_rows
from moby.store.influxd import Influxd
from tests.grafana import substitute

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000
LAEQ = [70.0, 90.0, 75.5, 82.0]
ZONE = [1.0, 4.0, 2.0, 2.0]
PEAK = [0.5, 3.25, 1.0, 0.75]
VELOCITY = [1.0, 6.0, 2.0, 3.0]


def energy_mean(levels: list[float]) -> float:
    return 10 * math.log10(sum(10 ** (level / 10) for level in levels) / len(levels))


EXPECTED = {
    ("noise", "laeq"): energy_mean(LAEQ),  # 84.79 dB; the arithmetic mean would be 79.4
    ("noise", "lamax"): max(LAEQ) + 6,
    ("vibration", "iso_zone"): 4.0,  # zone D, not a fractional 2.25
    ("vibration", "peak_accel_g"): 3.25,
    ("vibration", "rms_velocity"): sum(VELOCITY) / 4,
}


@pytest.fixture
async def minute(influxd: Influxd, db_name: str) -> AsyncIterator[tuple[InfluxClient, int]]:
    """Four readings of a noise and a vibration sensor in one minute two hours ago, in raw."""
    client = InfluxClient(influxd.url, db_name)
    await Bootstrap(client).run()
    now = int(time.time() * 1000)
    m0 = now - now % MINUTE_MS - 120 * MINUTE_MS
    lines = []
    for i in range(4):
        t = m0 + i * 10_000
        lines.append(f"noise,factory_id=f1,sensor_id=n1 laeq={LAEQ[i]},lamax={LAEQ[i] + 6},seq={i}i {t}")
        lines.append(
            f"vibration,factory_id=f1,sensor_id=v1 iso_zone={ZONE[i]},peak_accel_g={PEAK[i]},"
            f"rms_velocity={VELOCITY[i]},seq={i}i {t}"
        )
    await client.write("\n".join(lines).encode())
    try:
        yield client, m0
    finally:
        await client.execute(f'DROP DATABASE "{db_name}"', database="")
        await client.close()


async def test_the_rollup_the_dashboard_and_the_api_agree(minute: tuple[InfluxClient, int]) -> None:
    client, m0 = minute
    boot = Bootstrap(client)
    await boot.reconcile_rollups()
    await boot.backfill(m0, m0 + MINUTE_MS)

    for (measurement, field), expected in EXPECTED.items():
        sensor_id = "n1" if measurement == "noise" else "v1"
        # the 1-minute rollup
        rolled = series_rows((await client.query(f'SELECT "{field}" FROM "{ROLLUP_1M}"."{measurement}"'))[0])
        assert [r[field] for r in rolled] == [pytest.approx(expected, abs=1e-6)], (measurement, field)

        # Sensor detail, at raw and at the rollup, as Grafana substitutes it (one 1-minute bucket)
        for policy in (RAW, ROLLUP_1M):
            q = substitute(
                field_query(measurement, field),
                start_ms=m0,
                end_ms=m0 + MINUTE_MS - 1,
                interval="1m",
                variables={"factory_id": ["f1"], "sensor_id": [sensor_id]},
            ).replace('"auto".', f'"{policy}".')
            result = (await client.query(q))[0]
            assert "error" not in result, (q, result)
            values = [r[field] for r in series_rows(result) if r[field] is not None]
            assert values == [pytest.approx(expected, abs=1e-6)], (policy, q)

        # the readings API, asked for one point over the minute (raw, bucketed)
        record = SensorRecord("f1", sensor_id, sensor_type=measurement)
        q = readings_query(client.database, RAW, record, [field], m0, m0 + MINUTE_MS - 1, MINUTE_MS, True, 10)
        points = shape_points((await client.query(q, epoch="ms"))[0], [field], True, False, str)
        assert len(points) == 1, (q, points)
        assert points[0][field] == pytest.approx(expected, abs=1e-6), q


async def test_an_impossible_level_is_left_out_of_the_energy_mean_only(
    minute: tuple[InfluxClient, int],
) -> None:
    """10^(5000/10) overflows: InfluxDB could not even encode the answer. The reading is left out
    of the energy mean (and only of it); its extremes still show it."""
    client, m0 = minute
    await client.write(f"noise,factory_id=f1,sensor_id=n1 laeq=5000,lamax=5006,seq=9i {m0 + 50_000}".encode())
    record = SensorRecord("f1", "n1", sensor_type="noise")
    q = readings_query(
        client.database, RAW, record, ["laeq", "lamax", "seq"], m0, m0 + MINUTE_MS - 1, MINUTE_MS, True, 10
    )
    result: dict[str, Any] = (await client.query(q, epoch="ms"))[0]
    assert "error" not in result, result
    (point,) = shape_points(result, ["laeq", "lamax", "seq"], True, False, str)
    assert point["laeq"] == pytest.approx(energy_mean(LAEQ), abs=1e-6)
    assert (point["laeq_max"], point["lamax"], point["seq"]) == (5000.0, 5006.0, 9)
