"""A read-only, caching InfluxQL proxy in front of InfluxDB, for Grafana and the ``influx`` CLI.

It answers InfluxDB 1.x's own ``/ping`` and ``/query`` (GET and POST, ``db``, ``rp``, ``epoch``,
``chunked``, ``params``, ``u``/``p`` or basic auth), forwards read-only InfluxQL with the
backend's own InfluxDB credentials, and

* routes statements that name the pseudo retention policy ``"auto"`` to ``raw``, ``rollup_1m``
  or ``rollup_1h`` (:mod:`moby.query.routing`);
* caches answers: a range that ended before now (minus the settle time of the policy read) is
  complete and kept long; a range reaching to now holds the still-open bucket and is kept
  briefly; concurrent identical misses share one upstream request;
* refuses every statement that is not SELECT (without INTO), SHOW or EXPLAIN, and ``/write``,
  with InfluxDB's own error shape: ``{"error": "..."}``.

Grafana's ``$timeFilter`` turns a relative range into absolute milliseconds that move with every
refresh. A range whose end is within :data:`NEAR_NOW_MS` of now is therefore keyed by its length
("the last 15 minutes"), like ``time > now() - 15m``: every user of that view shares one answer
for the short TTL, which is exactly the staleness a ``now()``-relative query would have.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from moby.config import Settings
from moby.metrics import Metrics
from moby.query import influxql
from moby.query.cache import CachedResponse, Outcome, ResponseCache
from moby.query.routing import Resolution, choose, default_resolutions, retention_ms
from moby.store.influx import InfluxClient, InfluxError, quote_ident

AUTO: Final = "auto"
NEAR_NOW_MS: Final = 60_000
# How long after its end a range's data may still change, by the policy read: the writer's batching
# for raw, the continuous queries' resample windows for the rollups (1m: every minute over 5 min;
# 1h: every 5 minutes over 2 hours).
SETTLE_MS: Final = {"raw": 60_000, "rollup_1m": 6 * 60_000, "rollup_1h": 125 * 60_000}
_FORWARDED_PARAMS: Final = ("db", "rp", "epoch", "chunked", "chunk_size", "pretty", "params")
_KEPT_HEADERS: Final = ("content-type", "x-influxdb-version", "x-influxdb-build")


@dataclass(frozen=True)
class ProxyConfig:
    username: str | None = None
    password: str | None = None
    cache: bool = True
    cache_max_bytes: int = 64 * 1024 * 1024
    ttl_s: float = 3600.0
    recent_ttl_s: float = 5.0
    meta_ttl_s: float = 30.0
    resolutions: tuple[Resolution, ...] = field(default_factory=default_resolutions)

    @property
    def auth(self) -> bool:
        return bool(self.username)


def influx_error(message: str, status: int, version: str = "") -> Response:
    headers = {"X-Influxdb-Version": version} if version else {}
    return Response(orjson.dumps({"error": message}) + b"\n", status, headers, "application/json")


@dataclass
class Plan:
    """A query after checks and routing: what to send, its cache key, how long to keep it."""

    q: str
    key: str
    ttl_s: float
    policies: list[str]


class InfluxProxy:
    def __init__(
        self,
        upstream: InfluxClient,
        metrics: Metrics,
        config: ProxyConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.upstream = upstream
        self.metrics = metrics
        self.config = config
        self.cache = ResponseCache(config.cache_max_bytes)
        self._clock = clock
        self.version = ""  # InfluxDB's, learnt from its answers and repeated on ours
        metrics.query_cache_bytes.set_function(lambda: self.cache.bytes)
        metrics.query_cache_entries.set_function(lambda: len(self.cache))
        metrics.query_cache_evictions.set_function(lambda: self.cache.evictions)

    def app(self, *, with_metrics: bool = False) -> Starlette:
        routes = [
            Route("/ping", self.ping, methods=["GET", "HEAD"]),
            Route("/query", self.query, methods=["GET", "POST"]),
            Route("/write", self.write, methods=["POST", "GET"]),
            Route("/api/v2/write", self.write, methods=["POST"]),
        ]
        if with_metrics:
            routes.append(Route("/metrics", self._metrics, methods=["GET"]))

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await self.upstream.close()

        return Starlette(routes=routes, lifespan=lifespan)

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- endpoints ------------------------------------------------------------------------------
    async def ping(self, request: Request) -> Response:
        params = dict(request.query_params)
        try:
            status, headers, body = await self.upstream.forward("GET", "/ping", params=params)
        except InfluxError as exc:
            return influx_error(f"InfluxDB unreachable: {exc}", 502)
        kept = self._kept(headers)
        return Response(body if request.method == "GET" else b"", status, kept)

    async def write(self, request: Request) -> Response:
        params = await self._params(request)
        if (refused := self._authenticate(request, params)) is not None:
            return refused
        self.metrics.query_requests.labels("refused").inc()
        return influx_error(
            "error authorizing query: the MOBY query proxy is read-only; "
            "data enters through MQTT (see docs/QUERY.md)",
            403,
            self.version,
        )

    async def query(self, request: Request) -> Response:
        started = time.perf_counter()
        params = await self._params(request)
        if (refused := self._authenticate(request, params)) is not None:
            self.metrics.query_requests.labels("unauthorized").inc()
            return refused
        q = params.get("q", "")
        if not q.strip():
            self.metrics.query_requests.labels("bad_request").inc()
            return influx_error('missing required parameter "q"', 400, self.version)
        try:
            plan = self.plan(q, params, request.headers.get("accept", ""), tuple(request.query_params))
        except influxql.InfluxQLError as exc:
            self.metrics.query_requests.labels("bad_request").inc()
            return influx_error(f"error parsing query: {exc}", 400, self.version)
        except influxql.ReadOnlyViolation as exc:
            self.metrics.query_requests.labels("refused").inc()
            return influx_error(
                f"error authorizing query: the MOBY query proxy is read-only: {exc}", 403, self.version
            )
        # As sent: InfluxDB reads some parameters (pretty) from the URL only, others from either.
        in_url = {k: v for k, v in request.query_params.items() if k in _FORWARDED_PARAMS}
        in_body = {k: v for k, v in params.items() if k in _FORWARDED_PARAMS and k not in in_url}
        in_body["q"] = plan.q
        accept = request.headers.get("accept")

        async def load() -> tuple[CachedResponse, float]:
            self.metrics.query_upstream.inc()
            status, headers, body = await self.upstream.forward(
                "POST", "/query", params=in_url, data=in_body, headers={"Accept": accept} if accept else None
            )
            kept = tuple(self._kept(headers).items())
            # Errors (HTTP or per statement) are not kept: the next request asks again.
            ttl = plan.ttl_s if status == 200 and b'"error"' not in body else 0.0
            return CachedResponse(status, body, kept), ttl

        outcome: Outcome
        try:
            if self.config.cache:
                response, outcome = await self.cache.fetch(plan.key, load)
            else:
                response, outcome = (await load())[0], "bypass"
        except InfluxError as exc:
            self.metrics.query_requests.labels("upstream_error").inc()
            return influx_error(f"InfluxDB unreachable: {exc}", 502, self.version)
        self.metrics.query_requests.labels(outcome).inc()
        served_from_cache = outcome in ("hit", "coalesced")
        (self.metrics.query_cache_hits if served_from_cache else self.metrics.query_cache_misses).inc()
        self.metrics.query_latency.labels("hit" if served_from_cache else "upstream").observe(
            time.perf_counter() - started
        )
        headers = dict(response.headers)
        headers["X-Moby-Cache"] = outcome
        if plan.policies:
            headers["X-Moby-Policy"] = ",".join(plan.policies)
        return Response(response.body, response.status, headers)

    # --- the plan: checks, routing, cache key, TTL -------------------------------------------------
    def plan(
        self, q: str, params: dict[str, str], accept: str = "", url_params: tuple[str, ...] = ()
    ) -> Plan:
        now = self._clock() * 1000
        statements = influxql.split_statements(influxql.tokenize(q))
        for statement in statements:
            influxql.check_read_only(statement)
        texts: list[str] = []
        keys: list[str] = []
        policies: list[str] = []
        ttl = self.config.ttl_s
        rewritten = False
        for statement in statements:
            shape = influxql.shape(statement)
            lower = shape.lower.at(now) if shape.lower else None
            upper = shape.upper.at(now) if shape.upper else now
            replace: dict[int, str] = {}
            read: list[str] = []
            for index, name in influxql.policies_named(statement):
                if name == AUTO:
                    chosen = choose(
                        lower, upper, now, interval_ms=shape.interval_ms, resolutions=self.config.resolutions
                    ).policy
                    replace[index] = quote_ident(chosen)
                    policies.append(chosen)
                    self.metrics.query_routed.labels(chosen).inc()
                    read.append(chosen)
                else:
                    read.append(name)
            rewritten = rewritten or bool(replace)
            texts.append(influxql.render(statement, replace))
            ttl = min(ttl, self._ttl(statement, shape, upper, now, read))
            keys.append(self._key_text(statement, shape, replace, upper, now))
        extra = sorted((k, v) for k, v in params.items() if k in _FORWARDED_PARAMS)
        key = orjson.dumps([keys, extra, sorted(url_params), accept]).decode()
        return Plan(";".join(texts) if rewritten else q, key, ttl, policies)

    def _ttl(
        self,
        statement: list[influxql.Token],
        shape: influxql.Shape,
        upper: float,
        now: float,
        read: list[str],
    ) -> float:
        if influxql.significant(statement)[0].is_kw("SHOW"):
            return self.config.meta_ttl_s
        settle = max((SETTLE_MS.get(p, SETTLE_MS["rollup_1m"]) for p in read), default=SETTLE_MS["rollup_1m"])
        if upper >= now - settle:
            return self.config.recent_ttl_s
        return self.config.ttl_s

    @staticmethod
    def _key_text(
        statement: list[influxql.Token],
        shape: influxql.Shape,
        replace: dict[int, str],
        upper: float,
        now: float,
    ) -> str:
        """The statement normalised; a fixed range ending near now becomes "the last N ms"."""
        replace = dict(replace)
        drop: set[int] = set()
        lo, hi = shape.lower, shape.upper
        if hi is not None and not hi.relative and abs(now - upper) <= NEAR_NOW_MS:
            spans = [(hi, "now()")]
            if lo is not None and not lo.relative:
                spans.append((lo, f"now()-{round(hi.ms - lo.ms)}ms"))
            for bound, text in spans:
                start, end = bound.span
                replace[start] = text
                drop.update(range(start + 1, end))
        return influxql.normalize(
            [influxql.Token(t.kind, replace.get(i, t.text)) for i, t in enumerate(statement) if i not in drop]
        )

    # --- requests ---------------------------------------------------------------------------------
    @staticmethod
    async def _params(request: Request) -> dict[str, str]:
        """URL parameters and, for a form POST, the form's (which win, as in InfluxDB)."""
        params = dict(request.query_params)
        if request.method == "POST" and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            body = (await request.body()).decode("utf-8", "replace")
            params.update(urllib.parse.parse_qsl(body, keep_blank_values=True))
        return params

    def _authenticate(self, request: Request, params: dict[str, str]) -> Response | None:
        if not self.config.auth:
            return None
        user, password = params.get("u"), params.get("p")
        if user is None:
            header = request.headers.get("authorization", "")
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "basic":
                try:
                    user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    user = None
            elif scheme.lower() == "token":  # InfluxDB 1.8+: "Token username:password"
                user, _, password = value.partition(":")
        if user is None:
            return influx_error("unable to parse authentication credentials", 401, self.version)
        ok_user = hmac.compare_digest(user.encode(), (self.config.username or "").encode())
        ok_password = hmac.compare_digest((password or "").encode(), (self.config.password or "").encode())
        if not (ok_user and ok_password):
            return influx_error("authorization failed", 401, self.version)
        return None

    def _kept(self, headers: dict[str, str]) -> dict[str, str]:
        kept = {k: v for k, v in headers.items() if k.lower() in _KEPT_HEADERS}
        for k, v in kept.items():
            if k.lower() == "x-influxdb-version":
                self.version = v
        return kept


def proxy_from_settings(settings: Settings, metrics: Metrics) -> InfluxProxy:
    """The proxy as ``moby serve`` and ``moby proxy`` configure it from ``MOBY_*`` variables."""
    s = settings
    upstream = InfluxClient(
        s.influx_url,
        s.influx_db,
        username=s.influx_username,
        password=s.influx_password.get_secret_value() if s.influx_password else None,
        timeout_s=s.proxy_timeout_s,
        connections=64,
    )
    config = ProxyConfig(
        username=s.proxy_username if s.proxy_password else None,
        password=s.proxy_password.get_secret_value() if s.proxy_password else None,
        cache=s.proxy_cache,
        cache_max_bytes=s.proxy_cache_max_bytes,
        ttl_s=s.proxy_cache_ttl_s,
        recent_ttl_s=s.proxy_cache_recent_ttl_s,
        meta_ttl_s=s.proxy_cache_meta_ttl_s,
        resolutions=default_resolutions(
            retention_ms(s.raw_retention),
            retention_ms(s.rollup_retention),
            retention_ms(s.rollup_1h_retention),
        ),
    )
    return InfluxProxy(upstream, metrics, config)
