"""Idempotent InfluxDB set-up: database, retention policies and the 1-minute and 1-hour rollups.

* ``raw`` (default 30 days, DEFAULT): every reading as written.
* ``rollup_1m`` (default 365 days): one point per series and minute, written by a continuous
  query per measurement that keeps the field names — ``mean(x) AS x`` — so a query reads the
  same fields at either resolution; ``x_min`` / ``x_max`` carry the extremes and ``seq`` the
  last sequence number of the minute. ``x`` is the aggregate that is true for the field
  (:mod:`moby.schema.rollups`): the mean, the maximum of zones and peaks, the energy mean of
  levels in dB (over a subquery: :mod:`moby.store.aggregation`).
* ``rollup_1h`` (default 5 years): one point per series and hour, rolled up from ``rollup_1m`` by
  a second continuous query with the same names and aggregates: ``mean(x) AS x`` (the mean of
  the minute means, each minute weighted alike), ``min(x_min) AS x_min``, ``max(x_max) AS
  x_max``, ``max(seq)``.

Fields appear as sensors send them, so the continuous queries cannot be written once at start:
:meth:`Bootstrap.reconcile_rollups` compares each measurement's float fields with its
continuous query and re-creates the query when a field is new (InfluxDB 1.x has no ALTER for
continuous queries). The backend runs it at start and every ``interval`` seconds.

With InfluxDB's ``auth-enabled``, the bootstrap can be given an administrator's client: it then
creates the database and retention policies with it (they need admin rights) and makes the
backend's writer and the query proxy's reader two separate users — the writer with ALL on the
database, the reader with READ only (:func:`ensure_users`). The writer's own client does the rest.

Continuous queries only see data that arrives in time: ``RESAMPLE FOR 5m`` recomputes the last
five minutes on every run so that points arriving a little late (writer retries, brief edge
outages) are rolled up. Older backfill (an edge device flushing hours of buffer) is rolled up
by :meth:`Bootstrap.backfill`: ``moby rollup backfill`` runs it by hand, and the backend re-rolls
the last ``MOBY_ROLLUP_REROLL_HOURS`` periodically (see docs/QUERY.md).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Final

import orjson
import structlog

from moby.schema.rollups import Aggregate, aggregate_for
from moby.store.aggregation import Column, aggregate_sql
from moby.store.influx import InfluxClient, InfluxError, quote_ident, quote_string, series_rows

log = structlog.get_logger(__name__)

RAW: Final = "raw"
ROLLUP_1M: Final = "rollup_1m"
ROLLUP_1H: Final = "rollup_1h"
CQ_PREFIX: Final = "moby_rollup_1m_"
CQ_1H_PREFIX: Final = "moby_rollup_1h_"
RESAMPLE_FOR: Final = "5m"
# The hourly query runs every 5 minutes over the last 2 hours, so the open hour is visible (and
# corrected) while it fills, and the previous hour is finished with the minutes that closed late.
RESAMPLE_1H: Final = "RESAMPLE EVERY 5m FOR 2h"
MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
_NUMERIC: Final = frozenset({"float", "integer"})
_DURATION: Final = re.compile(r"^(?:\d+[smhdw])+$|^INF$")
# The backend's own measurements (moby_internal, moby_sensor_status, ...) are rolled up like a
# sensor type's; no sensor may write a name with this prefix.
BACKEND_PREFIX: Final = "moby_"


@dataclass(frozen=True)
class RetentionPolicy:
    name: str
    duration: str
    default: bool = False


def _duration_to_influx(duration: str) -> str:
    """InfluxDB reports durations as e.g. '720h0m0s'; normalise ours to hours for comparison."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if duration in ("INF", "0s", "0"):
        return "0s"
    seconds = sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhdw])", duration))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m}m{s}s"


def _where(start_ms: int | None, end_ms: int | None) -> str:
    if start_ms is None or end_ms is None:
        return ""
    return f"time >= {start_ms}ms AND time < {end_ms}ms"


def rollup_select(
    database: str, measurement: str, fields: list[str], start_ms: int | None = None, end_ms: int | None = None
) -> str:
    """The SELECT of a measurement's 1-minute rollup (shared with tests and the query layer)."""
    return _rollup(database, measurement, fields, (RAW, ROLLUP_1M, "1m"), start_ms, end_ms)


def rollup_1h_select(
    database: str, measurement: str, fields: list[str], start_ms: int | None = None, end_ms: int | None = None
) -> str:
    """The SELECT of the 1-hour rollup, read from ``rollup_1m``: the same names, extremes of extremes.

    ``fields`` are the raw fields (as for :func:`rollup_select`), so both rollups agree on which
    ``_min``/``_max`` aliases exist.
    """
    return _rollup(database, measurement, fields, (ROLLUP_1M, ROLLUP_1H, "1h"), start_ms, end_ms)


def _rollup(
    database: str,
    measurement: str,
    fields: list[str],
    step: tuple[str, str, str],
    start_ms: int | None,
    end_ms: int | None,
) -> str:
    """``SELECT <aggregate>(x) AS x, min(..) AS x_min, max(..) AS x_max, max(seq) AS seq INTO target``:
    each field's aggregate from :mod:`moby.schema.rollups` (mean, max, min or the energy mean of
    a level in dB); from raw the extremes are of ``x`` itself; from a rollup, of its ``x_min``/``x_max``."""
    source_rp, target_rp, interval = step
    taken = set(fields)
    columns: list[Column] = []
    for field in sorted(fields):
        columns.append(Column(aggregate_for(field, measurement), field, field))
        if field == "seq":
            continue
        for agg in (Aggregate.MIN, Aggregate.MAX):
            alias = f"{field}_{agg.value}"
            if alias not in taken:  # a sensor's own value named like an alias wins
                columns.append(Column(agg, field if source_rp == RAW else alias, alias))
    target = f"{quote_ident(database)}.{quote_ident(target_rp)}.{quote_ident(measurement)}"
    source = f"{quote_ident(database)}.{quote_ident(source_rp)}.{quote_ident(measurement)}"
    where = _where(start_ms, end_ms)
    expressions, from_ = aggregate_sql(columns, source, where=where, outer_where=where)
    return f"SELECT {expressions} INTO {target} {from_} GROUP BY time({interval}), *"


@dataclass(frozen=True)
class InfluxUser:
    name: str
    password: str = dataclass_field(repr=False)  # never in a log line


async def _admin_execute(admin: InfluxClient, q: str) -> list[dict[str, Any]]:
    """A statement in a POST body: passwords never travel in a URL (URLs end up in logs)."""
    status, _, body = await admin.forward("POST", "/query", data={"q": q})
    try:
        answer = orjson.loads(body)
        results: list[dict[str, Any]] = answer.get("results", [])
        error = answer.get("error") or next((r["error"] for r in results if "error" in r), None)
    except (orjson.JSONDecodeError, AttributeError):
        results, error = [], body[:200].decode("utf-8", "replace")
    if status != 200 or error:
        statement = q.split(" WITH PASSWORD")[0].split(" = ")[0]  # never the password
        raise InfluxError(f"{statement}: HTTP {status}: {error}", status)
    return results


async def ensure_users(
    admin: InfluxClient, database: str, writer: InfluxUser | None, reader: InfluxUser | None
) -> None:
    """The writer holds ALL privileges on ``database``; the reader READ on it and nothing else
    (no admin right, no other database). Users are created, or their passwords set, as given."""
    if writer is not None and reader is not None and writer.name == reader.name:
        raise ValueError(
            f"the writer and the proxy's reader must be different InfluxDB users (both {writer.name!r})"
        )
    shown = await _admin_execute(admin, "SHOW USERS")
    existing = {row["user"]: row for row in series_rows(shown[0])}
    db = quote_ident(database)
    for user, role in ((writer, "writer"), (reader, "reader")):
        if user is None:
            continue
        name = quote_ident(user.name)
        if user.name in existing:
            await _admin_execute(admin, f"SET PASSWORD FOR {name} = {quote_string(user.password)}")
        else:
            await _admin_execute(admin, f"CREATE USER {name} WITH PASSWORD {quote_string(user.password)}")
        if role == "writer":
            await _admin_execute(admin, f"GRANT ALL ON {db} TO {name}")
        else:
            if existing.get(user.name, {}).get("admin"):
                await _admin_execute(admin, f"REVOKE ALL PRIVILEGES FROM {name}")
            grants = await _admin_execute(admin, f"SHOW GRANTS FOR {name}")
            for row in series_rows(grants[0]):
                extra = row["database"] != database or row["privilege"] != "READ"
                if extra and row["privilege"] != "NO PRIVILEGES":  # a revoked grant stays listed
                    await _admin_execute(admin, f"REVOKE ALL ON {quote_ident(row['database'])} FROM {name}")
            await _admin_execute(admin, f"GRANT READ ON {db} TO {name}")
        log.info("InfluxDB user set", user=user.name, role=role, database=database)


class Bootstrap:
    def __init__(
        self,
        client: InfluxClient,
        *,
        raw_retention: str = "30d",
        rollup_retention: str = "365d",
        rollup_1h_retention: str = "1825d",
        admin: InfluxClient | None = None,
        writer: InfluxUser | None = None,
        reader: InfluxUser | None = None,
        sensor_types: Collection[str] | None = None,
    ) -> None:
        for value in (raw_retention, rollup_retention, rollup_1h_retention):
            if not _DURATION.match(value):
                raise ValueError(f"bad retention duration {value!r}")
        self.client = client
        # Creating databases and retention policies needs an administrator when auth is enabled.
        self.admin = admin or client
        self.users = (writer, reader) if admin is not None and (writer or reader) else None
        self.policies = (
            RetentionPolicy(RAW, raw_retention, default=True),
            RetentionPolicy(ROLLUP_1M, rollup_retention),
            RetentionPolicy(ROLLUP_1H, rollup_1h_retention),
        )
        self._cq_fields: dict[str, frozenset[str]] = {}
        # Continuous queries only for these measurements (and the backend's own): a measurement
        # that exists for any other reason (written before the sensor types were configured,
        # or by hand) gets none. None: every measurement (``moby rollup backfill``).
        self.sensor_types = frozenset(sensor_types) if sensor_types is not None else None

    def rolled_up(self, measurement: str) -> bool:
        """Whether a measurement gets rollups."""
        return (
            self.sensor_types is None
            or measurement in self.sensor_types
            or measurement.startswith(BACKEND_PREFIX)
        )

    @property
    def db(self) -> str:
        return self.client.database

    async def run(self) -> None:
        """Create what is missing and correct what differs; safe to run any number of times."""
        self._cq_fields.clear()  # the database may have been dropped, its queries with it
        await self.admin.execute(f"CREATE DATABASE {quote_ident(self.db)}", database="")
        if self.users is not None:
            await ensure_users(self.admin, self.db, *self.users)
        results = await self.admin.query(f"SHOW RETENTION POLICIES ON {quote_ident(self.db)}")
        existing = {row["name"]: row for row in series_rows(results[0])}
        for rp in self.policies:
            verb = "ALTER" if rp.name in existing else "CREATE"
            have = existing.get(rp.name)
            if (
                have
                and have["duration"] == _duration_to_influx(rp.duration)
                and (bool(have["default"]) == rp.default)
            ):
                continue
            statement = (
                f"{verb} RETENTION POLICY {quote_ident(rp.name)} ON {quote_ident(self.db)} "
                f"DURATION {rp.duration} REPLICATION 1" + (" DEFAULT" if rp.default else "")
            )
            await self.admin.execute(statement)
            log.info("retention policy set", policy=rp.name, duration=rp.duration, default=rp.default)
        await self.reconcile_rollups()

    async def _existing_cqs(self) -> dict[str, str]:
        # Asked on the database: without one, InfluxDB with auth-enabled wants an administrator.
        results = await self.client.query("SHOW CONTINUOUS QUERIES", database=self.db)
        return {
            row["name"]: row["query"]
            for series in results[0].get("series", [])
            if series.get("name") == self.db
            for row in (dict(zip(series["columns"], v, strict=True)) for v in series.get("values", []))
        }

    async def _numeric_fields(self) -> dict[str, set[str]]:
        results = await self.client.query(f"SHOW FIELD KEYS FROM {quote_ident(RAW)}./.*/")
        fields: dict[str, set[str]] = {}
        for row in series_rows(results[0]):
            if row["fieldType"] in _NUMERIC and self.rolled_up(row["_measurement"]):
                fields.setdefault(row["_measurement"], set()).add(row["fieldKey"])
        return fields

    async def reconcile_rollups(self) -> int:
        """(Re)create continuous queries so every numeric raw field is rolled up; returns the
        number of measurements whose queries changed."""
        fields = await self._numeric_fields()
        # At start nothing is known and every rollup query is re-created once: cheap, and it
        # repairs queries edited by hand or left by an older version.
        existing = await self._existing_cqs() if not self._cq_fields else {}
        db = quote_ident(self.db)
        changed = 0
        # Ours, for a measurement no longer rolled up: each one costs InfluxDB work every run.
        stale = [
            name
            for name in existing
            for prefix in (CQ_PREFIX, CQ_1H_PREFIX)
            if name.startswith(prefix) and not self.rolled_up(name[len(prefix) :])
        ]
        for name in stale:
            await self.client.execute(f"DROP CONTINUOUS QUERY {quote_ident(name)} ON {db}")
        if stale:
            log.info("rollup continuous queries dropped for unconfigured measurements", queries=len(stale))
        for measurement, names in sorted(fields.items()):
            if self._cq_fields.get(measurement) == frozenset(names):
                continue
            queries = (
                (CQ_PREFIX, f"RESAMPLE EVERY 1m FOR {RESAMPLE_FOR}", rollup_select),
                (CQ_1H_PREFIX, RESAMPLE_1H, rollup_1h_select),
            )
            for prefix, resample, select in queries:
                name = quote_ident(prefix + measurement)
                if measurement in self._cq_fields or prefix + measurement in existing:
                    await self.client.execute(f"DROP CONTINUOUS QUERY {name} ON {db}")
                body = select(self.db, measurement, sorted(names))
                await self.client.execute(
                    f"CREATE CONTINUOUS QUERY {name} ON {db} {resample} BEGIN {body} END"
                )
            self._cq_fields[measurement] = frozenset(names)
            changed += 1
            log.info("rollup continuous queries set", measurement=measurement, fields=len(names))
        return changed

    async def backfill(self, start_ms: int, end_ms: int) -> int:
        """Recompute both rollups over [start, end) from raw, e.g. after an edge device flushed
        hours of buffered readings that the continuous queries' resample window no longer covers.

        The range is widened to whole hours and worked through a day at a time to bound the
        memory InfluxDB needs; rewriting a rollup point is idempotent. Returns the statements run.
        """
        start = start_ms - start_ms % HOUR_MS
        end = end_ms + (-end_ms) % HOUR_MS
        fields = await self._numeric_fields()
        statements = 0
        for measurement, names in sorted(fields.items()):
            t = start
            while t < end:
                stop = min(t + DAY_MS, end)
                await self.client.execute(rollup_select(self.db, measurement, sorted(names), t, stop))
                await self.client.execute(rollup_1h_select(self.db, measurement, sorted(names), t, stop))
                statements += 2
                t = stop
        log.info("rollups backfilled", start_ms=start, end_ms=end, statements=statements)
        return statements
