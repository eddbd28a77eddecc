"""The HTTP API of ``moby serve``: health, readiness, metrics, sensors, readings, dead letters."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

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
from moby.ingest.registry import SensorRecord
from moby.schema import ID_PATTERN
from moby.service import Engine
from moby.store.bootstrap import RAW
from moby.store.influx import InfluxError, quote_ident, quote_string, series_rows

FIELD_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

DESCRIPTION = """
The MOBY backend: it subscribes to the sensors' MQTT topics, validates every message against
the `moby.*.v1` contract, queues accepted readings durably on disk and writes them to InfluxDB in
batches. Rejected messages are kept, with the reason, in a bounded dead-letter store.

* `/healthz` — is the process alive; `/readyz` — are the broker and InfluxDB reachable
* `/metrics` — Prometheus metrics (ingest rate, rejections by reason, queue depth, write latency, lag)
* `/api/v1/sensors` — every sensor seen, with its metadata and online state
* `/api/v1/sensors/{sensor_id}/readings` — a sensor's readings over a time range
* `/api/v1/dlq` — the newest dead letters
* `/` — a small built-in console: the fleet table and a live chart per sensor
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
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_engine:
            await engine.start()
        try:
            yield
        finally:
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
        summary="Broker and InfluxDB reachable",
        responses={503: {"model": Readiness, "description": "not ready"}},
    )
    async def readyz() -> JSONResponse:
        mqtt = engine.subscriber.connected.is_set()
        influx = await engine.influx_reachable()
        body = Readiness(
            ready=mqtt and influx, mqtt=mqtt, influx=influx, queue_full=not engine.queue.has_room()
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
        summary="A sensor's readings over a time range",
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
        select = ", ".join(quote_ident(n) for n in names) if names else "*"
        db = engine.settings.influx_db
        q = (
            f"SELECT {select} FROM {quote_ident(db)}.{quote_ident(RAW)}.{quote_ident(record.sensor_type)} "
            f"WHERE factory_id = {quote_string(record.factory_id)} "
            f"AND sensor_id = {quote_string(record.sensor_id)} "
            f"AND time >= {int(start_dt.timestamp() * 1000)}ms "
            f"AND time <= {int(end_dt.timestamp() * 1000)}ms "
            f"ORDER BY time ASC LIMIT {limit}"
        )
        try:
            results = await engine.influx.query(q, epoch="ms")
        except InfluxError as exc:
            raise HTTPException(502, f"InfluxDB: {exc}") from exc
        tag_keys = {"factory_id", "sensor_id", "line_id", "machine_id", "_measurement"}
        points = []
        seen_fields: list[str] = []
        for row in series_rows(results[0]):
            point = {k: v for k, v in row.items() if k not in tag_keys and v is not None}
            point["time"] = _iso(point["time"])
            for k in point:
                if k != "time" and k not in seen_fields:
                    seen_fields.append(k)
            points.append(point)
        return Readings(
            factory_id=record.factory_id,
            sensor_id=record.sensor_id,
            measurement=record.sensor_type,
            resolution=RAW,
            fields=names or sorted(seen_fields),
            points=points,
        )

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
