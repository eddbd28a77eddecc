"""Every query of the exported Grafana provisioning returns data from a real InfluxDB.

Demo data: a real ``moby serve`` (its own metrics reported every second) ingests births and
three hours of backdated telemetry from two factories' simulated sensors (values from
``moby.edge.simulate``), plus a few bad messages for the dead-letter panels. The 1-minute (and,
when it exists, 1-hour) rollups are then forced for the window with the continuous queries'
own SELECT ... INTO. Each query is substituted as Grafana would (``tests/grafana.py``) and run
against InfluxDB; ``"auto"`` is replaced in turn by every policy the database has, as the
MOBY proxy would route it (until the proxy is on this branch it is not in the path).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from moby.broker.mosquitto import Mosquitto
from moby.store.bootstrap import RAW, ROLLUP_1M, rollup_1h_select, rollup_select
from moby.store.influx import quote_ident
from moby.store.influxd import Influxd
from tests.grafana import (
    Query,
    alert_queries,
    dashboard_queries,
    duration_ms,
    grafana_interval,
    substitute,
)
from tests.support import Backend, DemoSensor, end_session, influx_query, mosquitto_pub_lines, wait_until

pytestmark = pytest.mark.integration

# Unique per run: the shared broker may hold other tests' retained births.
RUN = uuid.uuid4().hex[:6]
FACTORIES = (f"g{RUN}-a", f"g{RUN}-b")
TYPES = ("vibration", "temperature", "humidity", "noise")
HISTORY_S = 3 * 3600
STEP_S = 20
ROLLUP_1H = "rollup_1h"
RESOLUTION = {ROLLUP_1M: "1m", ROLLUP_1H: "1h"}


@dataclass
class Demo:
    backend: Backend
    export: Path
    start_ms: int
    policies: list[str]
    client_id: str

    def query(self, q: str) -> list[dict[str, Any]]:
        return influx_query(self.backend.influx_url, q, self.backend.db)


def _post_query(influx_url: str, db: str, q: str) -> None:
    data = urllib.parse.urlencode({"q": q, "db": db}).encode()
    with urllib.request.urlopen(f"{influx_url}/query", data=data, timeout=60) as r:
        body = orjson.loads(r.read())
    assert all("error" not in res for res in body["results"]), body


def _force_rollups(backend: Backend, since_ms: int, policies: list[str]) -> None:
    """Run the rollups' own SELECT ... INTO (the continuous queries' and backfill's) over the demo window."""
    db = backend.db
    start_ms, end_ms = since_ms - 120_000, int(time.time() * 1000) + 60_000
    results = influx_query(backend.influx_url, f"SHOW FIELD KEYS FROM {quote_ident(RAW)}./.*/", db)
    fields: dict[str, list[str]] = {}
    for series in results[0].get("series", []):
        fields[series["name"]] = [k for k, t in series["values"] if t in ("float", "integer")]
    for measurement, names in fields.items():
        _post_query(backend.influx_url, db, rollup_select(db, measurement, names, start_ms, end_ms))
    if ROLLUP_1H not in policies:
        return
    # rollup_1h is fed from rollup_1m (same names, same aggregates).
    for measurement, names in fields.items():
        _post_query(backend.influx_url, db, rollup_1h_select(db, measurement, names, start_ms, end_ms))


def _publish_demo(port: int, now_s: float) -> int:
    """Births, then three hours of readings per sensor as batches; returns the readings sent."""
    sensors = [
        DemoSensor(f, f"{t[:3]}-{f[-1]}{i}", t, line_id="line-1", machine_id=f"m-{f[-1]}{i // 2}")
        for f in FACTORIES
        for i, t in enumerate(TYPES)
    ]
    births = {f"moby/{s.factory_id}/{s.sensor_id}/status": s.birth() for s in sensors}
    for topic, payload in births.items():
        mosquitto_pub_lines(port, topic, [payload])
    sent = 0
    start = now_s - HISTORY_S
    for s in sensors:
        readings = []
        for k in range(HISTORY_S // STEP_S):
            t = start + k * STEP_S
            readings.append({"ts": int(t * 1000), "seq": k, "values": s.values(t)})
        # Batches well under the contract's 256 KiB (a vibration reading carries ~20 values).
        batches = [
            orjson.dumps(
                {
                    "schema": "moby.telemetry.v1",
                    "sensor_type": s.sensor_type,
                    "readings": readings[i : i + 200],
                }
            )
            for i in range(0, len(readings), 200)
        ]
        mosquitto_pub_lines(port, f"moby/{s.factory_id}/{s.sensor_id}/telemetry", batches)
        sent += len(readings)
    # Dead letters for the rejection panels: not JSON, and a wrong schema.
    bad = [b"{not json", orjson.dumps({"schema": "nope"}), b"[]"]
    mosquitto_pub_lines(port, f"moby/{FACTORIES[0]}/vib-a0/telemetry", bad)
    return sent


@pytest.fixture(scope="module")
def demo(broker: Mosquitto, influxd: Influxd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("grafana")
    client_id = f"moby-test-grafana-{uuid.uuid4().hex[:6]}"
    backend = Backend(
        data_dir=tmp / "backend",
        mqtt_url=broker.url,
        influx_url=influxd.url,
        db=f"t_{uuid.uuid4().hex[:10]}",
        client_id=client_id,
        extra_env={"MOBY_INTERNAL_METRICS_INTERVAL_S": "1"},
    )
    backend.start()
    try:
        now_s = time.time()
        sent = _publish_demo(broker.port, now_s)
        wait_until(lambda: backend.stored() >= sent, 120, what=f"{sent} readings stored")
        # Births carry machine_id: telemetry points must be tagged with it.
        mine = [s for s in backend.get("/api/v1/sensors")["items"] if s["factory_id"] in FACTORIES]
        assert len(mine) == len(FACTORIES) * len(TYPES)
        assert all(s["metadata"].get("machine_id") for s in mine), mine

        def internal_span_s() -> float:
            res = influx_query(backend.influx_url, 'SELECT "sensors" FROM "raw"."moby_internal"', backend.db)
            times = [row[0] for series in res[0].get("series", []) for row in series["values"]]
            return (max(times) - min(times)) / 1000 if times else 0.0

        def internal_minutes() -> int:
            res = influx_query(backend.influx_url, 'SELECT "sensors" FROM "raw"."moby_internal"', backend.db)
            return len({row[0] // 60_000 for series in res[0].get("series", []) for row in series["values"]})

        # Rates are derivatives between buckets: let the backend report over 25 s (three 10 s
        # buckets) and into a second minute (two 1-minute rollup points).
        wait_until(
            lambda: internal_span_s() >= 25 and internal_minutes() >= 2,
            120,
            what="the backend's own metrics over 25 s and two minutes",
        )
        policies = [
            row[0]
            for row in influx_query(backend.influx_url, "SHOW RETENTION POLICIES", backend.db)[0]["series"][
                0
            ]["values"]
        ]
        start_ms = int((now_s - HISTORY_S) * 1000)
        _force_rollups(backend, start_ms, policies)
        export = tmp / "provisioning"
        subprocess.run(
            [sys.executable, "-m", "moby", "grafana", "export", str(export)], check=True, capture_output=True
        )
        present = [p for p in (RAW, ROLLUP_1M, ROLLUP_1H) if p in policies]
        yield Demo(backend, export, start_ms, present, client_id)
    finally:
        backend.stop()
        asyncio.run(end_session("127.0.0.1", broker.port, client_id))


def _values(demo: Demo, q: str) -> list[str]:
    """The values a template variable query offers (SHOW TAG VALUES → column "value")."""
    result = demo.query(q)[0]
    assert "error" not in result, (q, result)
    return sorted({row[1] for s in result.get("series", []) for row in s["values"]})


def _resolve_variables(demo: Demo, variables: list[tuple[str, str]], end_ms: int) -> dict[str, list[str]]:
    """Run each variable query in order (later ones use earlier ones), selecting "All"."""
    resolved: dict[str, list[str]] = {}
    for name, query in variables:
        q = substitute(query, start_ms=demo.start_ms, end_ms=end_ms, interval="1m", variables=resolved)
        values = _values(demo, q)
        assert values, f"variable {name}: {q} returned nothing"
        resolved[name] = values
    return resolved


def _check(demo: Demo, q: Query, variables: dict[str, list[str]], start_ms: int, end_ms: int) -> list[str]:
    """Failures (empty list when the query returned series at every policy)."""
    failures = []
    # rollup_1h is what the proxy reads for ranges of days; it never routes these windows (15 min,
    # 3 h) there, and an hourly bucket of the demo's minutes of self-metrics is not a series to
    # test. What the proxy does pick is tested by ..._through_the_proxy below.
    policies = [p for p in demo.policies if p != ROLLUP_1H or end_ms - start_ms >= 2 * 86_400_000]
    for policy in policies if '"auto".' in q.text else [None]:
        # The proxy reads a rollup only for GROUP BY intervals at least as long as its
        # resolution, so that is the finest interval a rollup is ever asked for.
        floor = RESOLUTION.get(policy or "")
        interval = grafana_interval(
            end_ms - start_ms, max(filter(None, (q.min_interval, floor)), key=duration_ms, default=None)
        )
        text = substitute(q.text, start_ms=start_ms, end_ms=end_ms, interval=interval, variables=variables)
        run = text.replace('"auto".', f'"{policy}".') if policy else text
        result = demo.query(run)[0]
        if "error" in result or not result.get("series"):
            failures.append(f"{q.where} [{policy or 'as written'}, $__interval={interval}]: {run} → {result}")
    return failures


def _dashboards(demo: Demo) -> list[Path]:
    paths = sorted((demo.export / "dashboards" / "moby").glob("*.json"))
    assert {p.stem for p in paths} >= {"fleet-overview", "sensor-detail", "vibration", "pipeline-health"}
    return paths


def _panel_queries(demo: Demo, end_ms: int) -> Iterator[tuple[Query, dict[str, list[str]]]]:
    """Every panel query of every dashboard, with its dashboard's variables resolved ("All")."""
    for path in _dashboards(demo):
        queries, variables = dashboard_queries(path)
        values = _resolve_variables(demo, variables, end_ms)
        for q in queries:
            yield q, values


@pytest.mark.parametrize("range_s", [15 * 60, HISTORY_S], ids=["last-15m", "last-3h"])
def test_every_panel_query_returns_series(demo: Demo, range_s: int) -> None:
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - range_s * 1000
    failures: list[str] = []
    checked = 0
    for q, values in _panel_queries(demo, end_ms):
        failures += _check(demo, q, values, start_ms, end_ms)
        checked += 1
    assert checked >= 20
    assert not failures, "\n".join(failures)


def test_a_single_factory_and_sensor_selection_narrows_the_data(demo: Demo) -> None:
    """One value per variable (no regex group): only that sensor's series come back."""
    path = demo.export / "dashboards" / "moby" / "sensor-detail.json"
    queries, _ = dashboard_queries(path)
    end_ms = int(time.time() * 1000)
    q = queries[0]
    text = substitute(
        q.text,
        start_ms=end_ms - 900_000,
        end_ms=end_ms,
        interval="10s",
        variables={"factory_id": [FACTORIES[1]], "sensor_id": ["vib-b0"]},
    )
    for policy in [p for p in demo.policies if p != ROLLUP_1H]:  # a 15-minute window: not hourly data
        series = demo.query(text.replace('"auto".', f'"{policy}".'))[0]["series"]
        assert [s["tags"]["sensor_id"] for s in series] == ["vib-b0"], policy


def test_every_alert_query_returns_series(demo: Demo) -> None:
    queries = alert_queries(demo.export / "alerting" / "moby.yaml")
    assert len(queries) >= 4
    end_ms = int(time.time() * 1000)
    failures: list[str] = []
    for q in queries:
        # The alert engine runs each query over the rule's relative range (10 minutes here).
        failures += _check(demo, q, {}, end_ms - 600_000, end_ms)
    assert not failures, "\n".join(failures)


def test_the_backend_reports_its_own_metrics(demo: Demo) -> None:
    internal = demo.query('SELECT * FROM "raw"."moby_internal" ORDER BY time DESC LIMIT 1')[0]["series"][0]
    row = dict(zip(internal["columns"], internal["values"][0], strict=True))
    assert row["client_id"] == demo.client_id
    assert row["readings_accepted"] >= len(FACTORIES) * len(TYPES) * (HISTORY_S // STEP_S)
    assert row["rejected"] >= 3
    # Other tests' retained births on the shared broker may add sensors of other factories.
    assert row["sensors"] >= row["sensors_online"] >= len(FACTORIES) * len(TYPES)
    assert row["queue_points"] == 0
    for field in ("queue_bytes", "dead_letters", "points_written", "mqtt_connected", "influx_up"):
        assert row[field] is not None, field
    latency = demo.query(
        'SELECT max("write_latency_s_mean"), max("e2e_lag_s_p95") FROM "raw"."moby_internal"'
    )
    assert latency[0]["series"][0]["values"][0][1] > 0
    reasons = demo.query('SELECT last("messages") FROM "raw"."moby_internal_rejected" GROUP BY "reason"')
    assert {s["tags"]["reason"] for s in reasons[0]["series"]} >= {"invalid_json"}
    status = demo.query(
        'SELECT last("online"), last("last_seen_age_s") FROM "raw"."moby_sensor_status" '
        f'WHERE "factory_id" =~ /^g{RUN}-/ GROUP BY *'
    )
    assert len(status[0]["series"]) == len(FACTORIES) * len(TYPES)
    assert all(s["values"][0][1] == 1.0 for s in status[0]["series"])


def _through_proxy(demo: Demo, q: str) -> dict[str, Any]:
    """A query as Grafana's InfluxDB data source sends it to the MOBY proxy at /influx."""
    params = urllib.parse.urlencode({"db": demo.backend.db, "q": q, "epoch": "ms"})
    with urllib.request.urlopen(f"{demo.backend.api}/influx/query?{params}", timeout=30) as r:
        return orjson.loads(r.read())["results"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("range_s", [15 * 60, HISTORY_S], ids=["last-15m", "last-3h"])
def test_every_panel_query_returns_series_through_the_proxy(demo: Demo, range_s: int) -> None:
    """As Grafana runs them: through /influx, "auto" left for the proxy to route."""
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - range_s * 1000
    failures: list[str] = []
    checked = 0
    for q, values in _panel_queries(demo, end_ms):
        interval = grafana_interval(end_ms - start_ms, q.min_interval)
        text = substitute(q.text, start_ms=start_ms, end_ms=end_ms, interval=interval, variables=values)
        result = _through_proxy(demo, text)
        checked += 1
        if "error" in result or not result.get("series"):
            failures.append(f"{q.where} [$__interval={interval}]: {text} → {result}")
    assert checked >= 20
    assert not failures, "\n".join(failures)
