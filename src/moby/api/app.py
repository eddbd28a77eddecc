"""The HTTP API of ``moby serve``: health, readiness, metrics, sensors, readings, dead letters."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

import uvicorn
from fastapi import FastAPI, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from moby import __version__
from moby.api.console import mount_console
from moby.api.models import (
    DeadLetterItem,
    DeadLetters,
    Health,
    Readiness,
    Readings,
    Sensor,
    SensorList,
)
from moby.api.readings import readings_query, shape_points
from moby.api.server import BackgroundServer
from moby.ingest.registry import SensorRecord
from moby.query.proxy import proxy_from_settings
from moby.query.routing import bucket_ms, choose, default_resolutions, retention_ms
from moby.schema import ID_PATTERN
from moby.service import Engine
from moby.store.influx import InfluxError, quote_ident, series_rows

FIELD_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

READINGS_DOC = """
The resolution follows the range and `max_points` (see docs/QUERY.md): the step a reader needs is
`(end - start) / max_points` (without `max_points`: `/ 360`, so under 6 h reads `raw`, under 15 days
`rollup_1m`, longer `rollup_1h`); the coarsest policy whose own step fits it is read, and a range older
than a policy's retention (30 days for raw) moves to the next coarser one. Past `max_points` the
points are averaged into equal buckets (`interval_ms`). Field names are the same at every
resolution: a rollup's `x` is the mean over its bucket; `extremes=true` adds `x_min` and `x_max`.
The answer's `resolution` names the retention policy read.
"""

DESCRIPTION = """
The MOBY backend: it subscribes to the sensors' MQTT topics, validates every message against
the `moby.*.v1` contract, queues accepted readings durably on disk and writes them to InfluxDB in
batches. Rejected messages are kept, with the reason, in a bounded dead-letter store.

* `/healthz` — is the process alive; `/readyz` — are the broker and InfluxDB reachable
* `/metrics` — Prometheus metrics (ingest rate, rejections by reason, queue depth, write latency, lag)
* `/api/v1/sensors` — every sensor seen, with its metadata and online state
* `/api/v1/sensors/{sensor_id}/readings` — a sensor's readings over a time range, from `raw`,
  `rollup_1m` or `rollup_1h` as the range and `max_points` call for (the answer says which)
* `/api/v1/dlq` — the newest dead letters
* `/` — a small built-in console: the fleet table and a live chart per sensor
* `/influx/ping`, `/influx/query` — a read-only, caching InfluxQL proxy for Grafana's InfluxDB data
  source (InfluxQL mode): `FROM "auto"."vibration"` reads the resolution that fits the panel
  (see docs/QUERY.md); not shown below, it speaks InfluxDB's own API
"""


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sensor(record: SensorRecord, now_ms: int) -> Sensor:
    return Sensor(
        factory_id=record.factory_id,
        sensor_id=record.sensor_id,
        sensor_type=record.sensor_type,
        online=record.is_online(now_ms),
        reported_online=record.online,
        last_seen=_iso(record.last_seen_ms),
        metadata=record.metadata,
        health=record.health,
        readings=record.readings,
    )


def create_app(engine: Engine, *, manage_engine: bool = True) -> FastAPI:
    settings = engine.settings
    proxy = proxy_from_settings(settings, engine.metrics)
    resolutions = default_resolutions(
        retention_ms(settings.raw_retention),
        retention_ms(settings.rollup_retention),
        retention_ms(settings.rollup_1h_retention),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_engine:
            await engine.start()
        own_port: BackgroundServer | None = None
        serving: asyncio.Task[None] | None = None
        if settings.proxy_port:
            # InfluxDB's own paths (/ping, /query) on a port of their own, for clients such as
            # the influx CLI that cannot take a path prefix.
            own_port = BackgroundServer(
                uvicorn.Config(
                    proxy.app(),
                    host=settings.proxy_host,
                    port=settings.proxy_port,
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                )
            )
            serving = asyncio.create_task(own_port.serve(), name="influx-proxy")
        try:
            yield
        finally:
            if own_port is not None and serving is not None:
                own_port.should_exit = True
                await serving
            await proxy.upstream.close()
            if manage_engine:
                await engine.stop()

    app = FastAPI(
        title="MOBY backend",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )

    @app.get("/healthz", response_model=Health, tags=["operations"], summary="Process is alive")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["operations"],
        summary="Broker and InfluxDB reachable, every task running",
        responses={503: {"model": Readiness, "description": "not ready"}},
    )
    async def readyz() -> JSONResponse:
        mqtt = engine.subscriber.connected.is_set()
        influx = await engine.influx_reachable()
        down = engine.tasks_down()  # supervised tasks that failed and wait for their restart
        body = Readiness(
            ready=mqtt and influx and not down,
            mqtt=mqtt,
            influx=influx,
            queue_full=not engine.queue.has_room(),
            tasks_down=down,
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        engine.subscriber.flush_counts()
        return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/sensors", response_model=SensorList, tags=["sensors"], summary="Every sensor seen")
    async def sensors(
        factory_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        sensor_type: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = None,
        online: bool | None = None,
    ) -> SensorList:
        now_ms = int(time.time() * 1000)
        items = [
            _sensor(r, now_ms)
            for r in sorted(engine.registry.all(), key=lambda r: (r.factory_id, r.sensor_id))
            if (factory_id is None or r.factory_id == factory_id)
            and (sensor_type is None or r.sensor_type == sensor_type)
        ]
        if online is not None:
            items = [s for s in items if s.online == online]
        return SensorList(total=len(items), items=items)

    def _find(sensor_id: str, factory_id: str | None) -> SensorRecord:
        matches = [
            r
            for r in engine.registry.all()
            if r.sensor_id == sensor_id and (factory_id is None or r.factory_id == factory_id)
        ]
        if not matches:
            raise HTTPException(404, f"sensor {sensor_id!r} has not been seen")
        if len(matches) > 1:
            raise HTTPException(409, f"sensor {sensor_id!r} exists in several factories: pass factory_id")
        return matches[0]

    @app.get("/api/v1/sensors/{sensor_id}", response_model=Sensor, tags=["sensors"], summary="One sensor")
    async def sensor(
        sensor_id: Annotated[str, Path(pattern=ID_PATTERN)],
        factory_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    ) -> Sensor:
        return _sensor(_find(sensor_id, factory_id), int(time.time() * 1000))

    @app.get(
        "/api/v1/sensors/{sensor_id}/readings",
        response_model=Readings,
        tags=["sensors"],
        summary="A sensor's readings over a time range, at the resolution the range calls for",
        description=READINGS_DOC,
    )
    async def readings(
        sensor_id: Annotated[str, Path(pattern=ID_PATTERN)],
        factory_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        start: Annotated[datetime | None, Query(description="RFC 3339; default: end - 1 h")] = None,
        end: Annotated[datetime | None, Query(description="RFC 3339; default: now")] = None,
        fields: Annotated[
            list[str] | None,
            Query(description="value names; default: all (repeat or comma-separate)"),
        ] = None,
        max_points: Annotated[
            int | None,
            Query(
                ge=1,
                le=100_000,
                description="at most this many points per field: picks the "
                "resolution and, past it, averages into equal time buckets",
            ),
        ] = None,
        resolution: Annotated[
            str,
            Query(pattern=r"^(auto|raw|rollup_1m|rollup_1h)$", description="`auto` (default) or a policy"),
        ] = "auto",
        extremes: Annotated[
            bool, Query(description="add `<field>_min` / `<field>_max` (equal to the value in raw)")
        ] = False,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> Readings:
        record = _find(sensor_id, factory_id)
        if record.sensor_type is None:
            raise HTTPException(404, "no telemetry seen for this sensor yet")
        end_dt = end or datetime.now(UTC)
        start_dt = start or datetime.fromtimestamp(end_dt.timestamp() - 3600, UTC)
        if start_dt.tzinfo is None or end_dt.tzinfo is None:
            raise HTTPException(422, "start and end need a time zone")
        if start_dt >= end_dt:
            raise HTTPException(422, "start must be before end")
        names = [f for part in (fields or []) for f in part.split(",") if f]
        for name in names:
            if not re.match(FIELD_PATTERN, name):
                raise HTTPException(422, f"bad field name {name!r}")
        start_ms, end_ms = int(start_dt.timestamp() * 1000), int(end_dt.timestamp() * 1000)
        now_ms = time.time() * 1000
        if resolution == "auto":
            level = choose(start_ms, end_ms, now_ms, max_points=max_points, resolutions=resolutions)
        else:
            level = next(r for r in resolutions if r.policy == resolution)
        step = bucket_ms(start_ms, end_ms, max_points, level)
        try:
            if not names:  # every numeric value the sensor sends (the rollups hold only those)
                names = await _value_names(record.sensor_type)
            q = readings_query(
                settings.influx_db, level.policy, record, names, start_ms, end_ms, step, extremes, limit
            )
            results = await engine.influx.query(q, epoch="ms")
        except InfluxError as exc:
            raise HTTPException(502, f"InfluxDB: {exc}") from exc
        points = shape_points(results[0], names, extremes, level.policy == "raw" and step is None, _iso)
        return Readings(
            factory_id=record.factory_id,
            sensor_id=record.sensor_id,
            measurement=record.sensor_type,
            resolution=level.policy,
            policy=level.policy,
            interval_ms=step or (level.step_ms or None),
            fields=names + [f"{n}_{agg}" for n in names if n != "seq" for agg in ("min", "max") if extremes],
            points=points,
        )

    async def _value_names(measurement: str) -> list[str]:
        results = await engine.influx.query(f'SHOW FIELD KEYS FROM "raw".{quote_ident(measurement)}')
        return sorted(
            row["fieldKey"] for row in series_rows(results[0]) if row["fieldType"] in ("float", "integer")
        )

    app.mount("/influx", proxy.app())

    @app.get(
        "/api/v1/dlq",
        response_model=DeadLetters,
        tags=["dead letters"],
        summary="Newest dead letters",
    )
    async def dlq(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        reason: Annotated[str | None, Query(pattern=r"^[a-z_]{1,40}$")] = None,
    ) -> DeadLetters:
        items = await asyncio.to_thread(engine.dead_letters.latest, limit, reason)
        return DeadLetters(
            total=engine.queue.dead_total,
            evicted=engine.queue.dead_evicted,
            items=[DeadLetterItem(**item) for item in items],
        )

    mount_console(app)
    return app
