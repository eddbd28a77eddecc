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
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from moby import __version__
from moby.access import AccessPolicy
from moby.api.console import mount_console
from moby.api.docs import mount_docs
from moby.api.models import (
    DeadLetters,
    Gateway,
    GatewayList,
    Health,
    Latest,
    LatestList,
    Readiness,
    Readings,
    Sensor,
    SensorList,
)
from moby.api.readings import latest_query, readings_query, shape_latest, shape_points
from moby.api.security import Guard
from moby.api.server import BackgroundServer
from moby.ingest.queue import take_bytes
from moby.ingest.registry import SensorRecord
from moby.query.proxy import proxy_from_settings
from moby.query.routing import bucket_ms, choose, default_resolutions, retention_ms
from moby.schema import ID_PATTERN
from moby.service import Engine
from moby.store.influx import InfluxError, quote_ident, series_rows
from moby.webguard import AllowedHosts, WebGuard

FIELD_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
LATEST_WINDOW_S = 6 * 3600  # the console marks a sensor without a newer reading as having none
# The times InfluxDB can hold (int64 nanoseconds, less its two reserved values), in ms.
INFLUX_MIN_MS = -9_223_372_036_854
INFLUX_MAX_MS = 9_223_372_036_854
SENSOR_CURSOR = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Dead letters are read from SQLite and encoded on a worker thread this many bytes at a time.
DLQ_CHUNK_BYTES = 256 * 1024

READINGS_DOC = """
The resolution follows the range and `max_points` (see docs/QUERY.md): the step a reader needs is
`(end - start) / max_points` (without `max_points`: `/ 360`, so under 6 h reads `raw`, under 15 days
`rollup_1m`, longer `rollup_1h`); the coarsest policy whose own step fits it is read, and a range older
than a policy's retention (30 days for raw) moves to the next coarser one. Past `max_points` the
points are summarised into equal buckets (`interval_ms`). Field names are the same at every
resolution: a rollup's `x` is the field's aggregate over its bucket (the mean; the maximum of zones
and peaks; the energy mean of levels in dB: see docs/QUERY.md); `extremes=true` adds `x_min` and `x_max`.
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
* `/api/v1/latest` — every sensor's newest reading (its values), for a live overview
* `/api/v1/dlq` — the newest dead letters
* `/` — a small built-in console: every sensor's newest values, zone and state, live charts, the fleet table
* `/influx/ping`, `/influx/query` — a read-only, caching InfluxQL proxy for Grafana's InfluxDB data
  source (InfluxQL mode): `FROM "auto"."vibration"` reads the resolution that fits the panel
  (see docs/QUERY.md); not shown below, it speaks InfluxDB's own API

Access: beyond loopback (or with `MOBY_API_AUTH=required`) every endpoint except `/healthz`,
`/readyz` and the console's files needs an API token, `Authorization: Bearer <token>`
(`moby token create --role viewer|operator|admin`): `viewer` reads sensors, readings, metrics and
the proxy; `admin` also the dead letters (raw payloads). See docs/SECURITY.md.
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
    """The app; AccessConfigError when the access settings are refused (docs/SECURITY.md)."""
    settings = engine.settings
    # Who may call what (moby.access): one policy for the API and the proxy, by where they listen.
    listen = [settings.api_host] + ([settings.proxy_host] if settings.proxy_port else [])
    access = AccessPolicy.from_settings(settings, listen)
    hosts = AllowedHosts.build(settings.api_allowed_hosts, listen)
    guard = Guard(access)
    proxy = proxy_from_settings(settings, engine.metrics, access=access)
    resolutions = default_resolutions(
        retention_ms(settings.raw_retention),
        retention_ms(settings.rollup_retention),
        retention_ms(settings.rollup_1h_retention),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        access.startup_report()
        if manage_engine:
            await engine.start()
        own_port: BackgroundServer | None = None
        serving: asyncio.Task[None] | None = None
        if settings.proxy_port:
            # InfluxDB's own paths (/ping, /query) on a port of their own, for clients such as
            # the influx CLI that cannot take a path prefix.
            own_port = BackgroundServer(
                uvicorn.Config(
                    WebGuard(proxy.app(), hosts=hosts, proxy_prefixes=("/",)),
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
        docs_url=None,  # /docs and /redoc come from the package, not a CDN: mount_docs
        redoc_url=None,
    )
    # Host allow-list, cross-site refusal and security headers, for every path (docs/SECURITY.md).
    app.add_middleware(WebGuard, hosts=hosts, proxy_prefixes=("/influx",))
    mount_docs(app)

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
        storage_error = engine.committer.storage_error
        down = engine.tasks_down()  # supervised tasks that failed and wait for their restart
        reasons = []
        if not mqtt:
            reasons.append("not connected to the broker")
        if not influx:
            reasons.append("InfluxDB is unreachable or refusing writes")
        if storage_error is not None:
            reasons.append(f"the data dir refuses writes ({storage_error}); nothing is acknowledged")
        if down:
            reasons.append(f"tasks down, waiting for their restart: {', '.join(down)}")
        body = Readiness(
            ready=not reasons,
            mqtt=mqtt,
            influx=influx,
            queue_full=not engine.queue.has_room(),
            storage=storage_error is None,
            tasks_down=down,
            reasons=reasons,
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        dependencies=[guard.viewer],
    )
    async def metrics() -> Response:
        engine.subscriber.flush_counts()
        return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/api/v1/sensors",
        response_model=SensorList,
        tags=["sensors"],
        summary="Every sensor seen, a page at a time",
        description="In (factory_id, sensor_id) order; `next_cursor` of an answer, passed as `cursor`, "
        "gives the next page. Gateways (connections carrying other sensors) are listed at "
        "`/api/v1/gateways`, not here.",
        dependencies=[guard.viewer],
    )
    async def sensors(
        factory_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        sensor_type: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = None,
        online: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="sensors per page")] = 1000,
        cursor: Annotated[
            str | None, Query(pattern=SENSOR_CURSOR, description="`next_cursor` of the previous page")
        ] = None,
    ) -> SensorList:
        now_ms = int(time.time() * 1000)

        def keep(r: SensorRecord) -> bool:
            return (
                not r.gateway
                and (sensor_type is None or r.sensor_type == sensor_type)
                and (online is None or r.is_online(now_ms) == online)
            )

        after = (cursor.split("/", 1)[0], cursor.split("/", 1)[1]) if cursor else None
        records, total, last = engine.registry.page(limit, after=after, factory_id=factory_id, keep=keep)
        return SensorList(
            total=total,
            items=[_sensor(r, now_ms) for r in records],
            next_cursor=f"{last[0]}/{last[1]}" if last else None,
        )

    @app.get(
        "/api/v1/gateways",
        response_model=GatewayList,
        tags=["sensors"],
        summary="Gateways: connections that carry other sensors' messages (not counted as sensors)",
        dependencies=[guard.viewer],
    )
    async def gateways(factory_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None) -> GatewayList:
        now_ms = int(time.time() * 1000)
        records, total, _ = engine.registry.page(10_000, factory_id=factory_id, keep=lambda r: r.gateway)
        return GatewayList(
            total=total,
            items=[
                Gateway(
                    factory_id=r.factory_id,
                    gateway_id=r.sensor_id,
                    online=r.is_online(now_ms),
                    last_seen=_iso(r.last_seen_ms),
                    metadata=r.metadata,
                )
                for r in records
            ],
        )

    def _find(sensor_id: str, factory_id: str | None) -> SensorRecord:
        if factory_id is not None:
            record = engine.registry.get(factory_id, sensor_id)
            matches = [record] if record is not None and not record.gateway else []
        else:
            matches = [r for r in engine.registry.all() if r.sensor_id == sensor_id and not r.gateway]
        if not matches:
            raise HTTPException(404, f"sensor {sensor_id!r} has not been seen")
        if len(matches) > 1:
            raise HTTPException(409, f"sensor {sensor_id!r} exists in several factories: pass factory_id")
        return matches[0]

    @app.get(
        "/api/v1/sensors/{sensor_id}",
        response_model=Sensor,
        tags=["sensors"],
        summary="One sensor",
        dependencies=[guard.viewer],
    )
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
        dependencies=[guard.viewer],
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
        for name, moment in (("start", start_dt), ("end", end_dt)):
            if not INFLUX_MIN_MS <= moment.timestamp() * 1000 <= INFLUX_MAX_MS:
                raise HTTPException(
                    422,
                    f"{name} {moment.isoformat()} is outside the times InfluxDB can hold "
                    f"({_iso(INFLUX_MIN_MS)} to {_iso(INFLUX_MAX_MS)})",
                )
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

    @app.get(
        "/api/v1/latest",
        response_model=LatestList,
        tags=["sensors"],
        summary="Every sensor's newest reading",
        description="The newest raw reading of each sensor seen, within the last "
        f"{LATEST_WINDOW_S // 3600} h: its time, `seq` and numeric values (units are in the sensor's "
        "birth metadata, `/api/v1/sensors`). One InfluxDB query per sensor type.",
        dependencies=[guard.viewer],
    )
    async def latest(
        factory_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        sensor_type: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = None,
        limit: Annotated[
            int, Query(ge=1, le=10_000, description="at most this many sensors per type")
        ] = 10_000,
    ) -> LatestList:
        types = sorted(
            {
                r.sensor_type
                for r in engine.registry.all()
                if r.sensor_type and (factory_id is None or r.factory_id == factory_id)
            }
        )
        measurements = [t for t in types if sensor_type is None or t == sensor_type]
        if not measurements:
            return LatestList(window_s=LATEST_WINDOW_S, items=[])
        q = latest_query(settings.influx_db, measurements, LATEST_WINDOW_S, factory_id, limit)
        try:
            results = await engine.influx.query(q, epoch="ms")
        except InfluxError as exc:
            raise HTTPException(502, f"InfluxDB: {exc}") from exc
        items = shape_latest(results, measurements, _iso)
        return LatestList(window_s=LATEST_WINDOW_S, items=[Latest(**item) for item in items])

    app.mount("/influx", proxy.app())

    @app.get(
        "/api/v1/dlq",
        response_model=None,
        response_class=StreamingResponse,
        responses={200: {"model": DeadLetters, "description": "a page of dead letters, newest first"}},
        tags=["dead letters"],
        summary="Newest dead letters, a page at a time",
        description="At most `limit` items and about `max_bytes` of them (always at least one), newest "
        "first; `next_cursor`, passed as `cursor`, gives the next (older) page. The answer is "
        "streamed as it is read.",
        dependencies=[guard.admin],  # raw payloads, as sensors sent them
    )
    async def dlq(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        reason: Annotated[str | None, Query(pattern=r"^[a-z_]{1,40}$")] = None,
        cursor: Annotated[
            str | None, Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page")
        ] = None,
        max_bytes: Annotated[
            int, Query(ge=4096, le=64 * 1024 * 1024, description="bytes of items per answer, about")
        ] = 4 * 1024 * 1024,
    ) -> StreamingResponse:
        head = b'{"total":%d,"evicted":%d,"bytes":%d,"items":[' % (
            engine.queue.dead_total,
            engine.queue.dead_evicted,
            engine.queue.dead_bytes,
        )
        items = engine.dead_letters.newest_first(before_id=int(cursor) if cursor else None, reason=reason)

        async def body() -> AsyncIterator[bytes]:
            yield head
            sent = size = 0
            last_id: int | None = None
            next_cursor: int | None = None
            try:
                while next_cursor is None:
                    # SQLite reads and JSON encoding on a worker thread, a bounded chunk at a time.
                    chunk = await asyncio.to_thread(take_bytes, items, DLQ_CHUNK_BYTES)
                    if not chunk:
                        break
                    for id_, encoded in chunk:
                        if sent == limit or (sent and size + len(encoded) > max_bytes):
                            next_cursor = last_id
                            break
                        yield b"," + encoded if sent else encoded
                        sent += 1
                        size += len(encoded)
                        last_id = id_
            finally:
                await asyncio.to_thread(items.close)
            tail = b'"%d"' % next_cursor if next_cursor is not None else b"null"
            yield b'],"next_cursor":%b}' % tail

        return StreamingResponse(body(), media_type="application/json")

    mount_console(app)
    return app
