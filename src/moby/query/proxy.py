"""A read-only, caching InfluxQL proxy in front of InfluxDB, for Grafana and the ``influx`` CLI.

It answers InfluxDB 1.x's own ``/ping`` and ``/query`` (GET and POST, ``db``, ``rp``, ``epoch``,
``chunked``), takes MOBY's API tokens as InfluxDB clients send credentials (basic auth or ``p``
with the token as the password, or ``Authorization: Bearer``; :mod:`moby.access`), forwards
read-only InfluxQL with its own InfluxDB credentials (a user that should hold only READ on
MOBY's database), and

* routes statements that name the pseudo retention policy ``"auto"`` to ``raw``, ``rollup_1m``
  or ``rollup_1h`` (:mod:`moby.query.routing`);
* caches answers: a range that ended before now (minus the settle time of the policy read) is
  complete and kept long; a range reaching to now holds the still-open bucket and is kept
  briefly; concurrent identical misses share one upstream request;
* forwards only what it fully parsed (:mod:`moby.query.parser`) as read-only statements —
  SELECT without INTO, or one of the SHOW statements dashboards use — on MOBY's own database,
  and refuses everything else, and ``/write``, with InfluxDB's error shape ``{"error": "..."}``;
* takes one canonical set of parameters per request (a name given twice is refused) and keys
  its cache on exactly what it forwards plus who asked;
* bounds each upstream query in answer size, time and concurrency per client
  (:mod:`moby.query.upstream`).

Grafana's ``$timeFilter`` turns a relative range into absolute milliseconds that move with every
refresh. A range whose end is within :data:`NEAR_NOW_MS` of now is therefore keyed by its length
("the last 15 minutes"), like ``time > now() - 15m``: every user of that view shares one answer
for the short TTL, which is exactly the staleness a ``now()``-relative query would have.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from moby.access import ANONYMOUS, AccessPolicy, Identity
from moby.config import Settings
from moby.metrics import Metrics
from moby.query import influxql, parser
from moby.query.cache import CachedResponse, Loader, Outcome, ResponseCache
from moby.query.delta import DeltaCache, DeltaPart, eligible
from moby.query.influxhttp import (
    Authenticator,
    BadRequest,
    canonical_params,
    influx_error,
    token_authenticator,
)
from moby.query.parser import Refused
from moby.query.routing import Resolution, choose, default_resolutions, retention_ms
from moby.query.upstream import Busy, ClientLimiter, Timeout, TooLarge, UpstreamError, fetch
from moby.store.influx import InfluxClient, InfluxError, quote_ident

log = structlog.get_logger(__name__)

AUTO: Final = "auto"
NEAR_NOW_MS: Final = 60_000
# How long after its end a range's data may still change, by the policy read: the writer's batching
# for raw, the continuous queries' resample windows for the rollups (1m: every minute over 5 min;
# 1h: every 5 minutes over 2 hours).
SETTLE_MS: Final = {"raw": 60_000, "rollup_1m": 6 * 60_000, "rollup_1h": 125 * 60_000}
# What is forwarded to InfluxDB, and keys the cache (q aside); anything else is not passed on.
_FORWARDED_PARAMS: Final = ("db", "rp", "epoch", "chunked", "chunk_size", "pretty")
_REFUSED: Final = "error authorizing query: the MOBY query proxy forwards only statements it has parsed"
_READ_ONLY: Final = "error authorizing query: the MOBY query proxy is read-only"

# Queries in flight to InfluxDB at once, all clients together: with the answer-size bound, this
# bounds the memory answers being read can take (16 × MOBY_PROXY_MAX_RESPONSE_BYTES).
UPSTREAM_CONNECTIONS: Final = 16
_KEPT_HEADERS: Final = ("content-type", "x-influxdb-version", "x-influxdb-build")


@dataclass(frozen=True)
class ProxyConfig:
    database: str = "moby"  # the one database the proxy serves (the allow-list)
    cache: bool = True
    delta: bool = True
    cache_max_bytes: int = 64 * 1024 * 1024
    ttl_s: float = 3600.0
    recent_ttl_s: float = 5.0
    meta_ttl_s: float = 30.0
    resolutions: tuple[Resolution, ...] = field(default_factory=default_resolutions)
    max_response_bytes: int = 16 * 1024 * 1024
    timeout_s: float = 60.0
    max_concurrent_per_client: int = 4
    max_waiting_per_client: int = 256


@dataclass
class Plan:
    """A query after checks and routing: what to send, its cache key, how long to keep it."""

    q: str
    key: str
    ttl_s: float
    policies: list[str]
    delta: list[DeltaPart] | None = None  # when every statement can be answered by delta caching
    url: dict[str, str] = field(default_factory=dict)  # forwarded in the URL (pretty)
    form: dict[str, str] = field(default_factory=dict)  # forwarded in the form body (q and the rest)


class InfluxProxy:
    def __init__(
        self,
        upstream: InfluxClient,
        metrics: Metrics,
        config: ProxyConfig,
        clock: Callable[[], float] = time.time,
        access: AccessPolicy | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.upstream = upstream
        self.metrics = metrics
        self.config = config
        # Who asked: a function of its own (API tokens by default), apart from parsing and caching.
        self.authenticate = authenticator or token_authenticator(
            access or AccessPolicy.open(), lambda: self.version
        )
        limiter = ClientLimiter(config.max_concurrent_per_client, config.max_waiting_per_client)
        self.limiter = limiter
        # The bound is shared: half for whole answers, half for the delta cache's buckets.
        self.cache = ResponseCache(config.cache_max_bytes // 2)
        self.delta = DeltaCache(config.cache_max_bytes // 2, max_age_s=config.ttl_s)
        self._clock = clock
        self.version = ""  # InfluxDB's, learnt from its answers and repeated on ours
        metrics.query_cache_bytes.set_function(lambda: self.cache.bytes)
        metrics.query_cache_entries.set_function(lambda: len(self.cache))
        metrics.query_cache_evictions.set_function(lambda: self.cache.evictions)
        metrics.query_delta_bytes.set_function(lambda: self.delta.bytes)
        metrics.query_upstream_inflight.set_function(lambda: limiter.inflight)
        metrics.query_upstream_waiting.set_function(lambda: limiter.waiting)

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
        if isinstance(refused := await self.authenticate(request, dict(request.query_params)), Response):
            return refused
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
        try:
            params = await canonical_params(request)
        except BadRequest as exc:
            return self._reject("bad_request", str(exc), 400)
        who = await self.authenticate(request, params)
        if isinstance(who, Response):
            self.metrics.query_requests.labels("unauthorized").inc()
            return who
        return self._reject(
            "refused",
            "error authorizing query: the MOBY query proxy is read-only; "
            "data enters through MQTT (see docs/QUERY.md)",
            403,
        )

    def _reject(self, outcome: str, message: str, status: int) -> Response:
        self.metrics.query_requests.labels(outcome).inc()
        return influx_error(message, status, self.version)

    async def query(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            params = await canonical_params(request)
        except BadRequest as exc:
            return self._reject("bad_request", str(exc), 400)
        who = await self.authenticate(request, params)
        if isinstance(who, Response):
            self.metrics.query_requests.labels("unauthorized").inc()
            return who
        q = params.get("q", "")
        if not q.strip():
            return self._reject("bad_request", 'missing required parameter "q"', 400)
        if "params" in params:
            return self._reject(
                "bad_request", "bound parameters (params) are not supported by the MOBY query proxy", 400
            )
        if "pretty" in params and "pretty" not in request.query_params:
            del params["pretty"]  # InfluxDB reads it from the URL only: as sent, it would be ignored
        db = params.get("db", "")
        if db and db != self.config.database:
            return self._reject(
                "refused", f'{_READ_ONLY}: database "{db}" is not served (only "{self.config.database}")', 403
            )
        try:
            plan = self.plan(q, params, request.headers.get("accept", ""), who)
        except influxql.InfluxQLError as exc:
            return self._reject("unparsed", f"{_REFUSED}: {exc}", 403)
        except Refused as exc:
            return self._reject("refused", f"{_READ_ONLY}: {exc}", 403)
        client = who.key if who != ANONYMOUS else f"address:{request.client.host if request.client else ''}"
        accept = request.headers.get("accept")
        try:
            if self.config.cache and self.config.delta and plan.delta and self._delta_request(params, accept):
                answered = await self._delta_answer(plan, accept, client)
                if answered is not None:
                    response, delta_outcome = answered
                    self._count(delta_outcome, started)
                    if plan.policies:
                        response.headers["X-Moby-Policy"] = ",".join(plan.policies)
                    return response
            outcome: Outcome
            load = self._loader(plan.url, plan.form, accept, plan.ttl_s, client)
            if self.config.cache:
                cached, outcome = await self.cache.fetch(plan.key, load)
            else:
                cached, outcome = (await load())[0], "bypass"
        except UpstreamError as exc:
            return self._upstream_failed(exc)
        self._count(outcome, started)
        headers = dict(cached.headers)
        headers["X-Moby-Cache"] = outcome
        if plan.policies:
            headers["X-Moby-Policy"] = ",".join(plan.policies)
        return Response(cached.body, cached.status, headers)

    def _upstream_failed(self, exc: UpstreamError) -> Response:
        if isinstance(exc, Busy):
            return self._reject("throttled", str(exc), 429)
        if isinstance(exc, TooLarge):
            return self._reject("too_large", str(exc), 422)
        if isinstance(exc, Timeout):
            limit = f"{self.config.timeout_s:g} s (MOBY_PROXY_TIMEOUT_S)"
            return self._reject("timeout", f"the query ran longer than the proxy's limit of {limit}", 504)
        return self._reject("upstream_error", str(exc), 502)

    def _count(self, outcome: Outcome, started: float) -> None:
        self.metrics.query_requests.labels(outcome).inc()
        served_from_cache = outcome in ("hit", "coalesced")
        (self.metrics.query_cache_hits if served_from_cache else self.metrics.query_cache_misses).inc()
        self.metrics.query_latency.labels("hit" if served_from_cache else "upstream").observe(
            time.perf_counter() - started
        )

    def _loader(
        self, url: dict[str, str], form: dict[str, str], accept: str | None, ttl_s: float, client: str
    ) -> Loader:
        async def load() -> tuple[CachedResponse, float]:
            c = self.config
            try:
                async with asyncio.timeout(c.timeout_s), self.limiter.slot(client):
                    self.metrics.query_upstream.inc()
                    status, headers, body = await fetch(
                        self.upstream,
                        url_params=url,
                        form=form,
                        headers={"Accept": accept} if accept else None,
                        max_bytes=c.max_response_bytes,
                    )
            except TimeoutError as exc:
                raise Timeout(str(exc)) from exc
            kept = tuple(self._kept(headers).items())
            # Errors (HTTP or per statement) are not kept: the next request asks again.
            ttl = ttl_s if status == 200 and b'"error"' not in body else 0.0
            return CachedResponse(status, body, kept, created=self._clock()), ttl

        return load

    @staticmethod
    def _delta_request(params: dict[str, str], accept: str | None) -> bool:
        """Grafana's kind of request: JSON, epoch=ms, whole (not chunked), no bound parameters."""
        json_ok = not accept or "json" in accept or accept.strip() == "*/*"
        return (
            params.get("epoch") == "ms"
            and params.get("chunked") != "true"
            and "params" not in params
            and "pretty" not in params
            and json_ok
        )

    async def _delta_answer(
        self, plan: Plan, accept: str | None, client: str
    ) -> tuple[Response, Outcome] | None:
        """Held complete buckets plus a (shared, briefly cached) tail query per statement; None to
        fall back to the whole answer (an error, or an answer not shaped as expected)."""
        assert plan.delta is not None
        tails: list[tuple[DeltaPart, int, str, CachedResponse]] = []
        fetched = False
        for part in plan.delta:
            held_until = self.delta.covered_until(part.template, part.first_bucket_ms)
            fetch_from = part.first_bucket_ms if held_until is None else held_until
            key = orjson.dumps(["delta", part.template, fetch_from]).decode()
            form = {**plan.form, "q": part.text_from(fetch_from)}
            response, outcome = await self.cache.fetch(
                key, self._loader(plan.url, form, accept, self.config.recent_ttl_s, client)
            )
            fetched = fetched or outcome not in ("hit", "coalesced")
            if response.status != 200 or b'"error"' in response.body:
                return None
            tails.append((part, fetch_from, key, response))
        overall: Outcome = "miss" if fetched else "hit"
        # Users of one view ask for the same buckets with the same tail: assemble that once.
        memo_key = orjson.dumps(
            ["assembled", [(p.template, p.first_bucket_ms, f, r.created) for p, f, _, r in tails]]
        ).decode()
        memo = self.cache.get(memo_key)
        if memo is None:
            memo = self._assemble(tails)
            if memo is None:
                return None
            self.cache.put(memo_key, memo, min(self.cache.remaining_ttl(key) for _, _, key, _ in tails))
        headers = dict(memo.headers)
        cached_rows, tail_rows = (int(n) for n in re.findall(r"\d+", headers["X-Moby-Delta"]))
        self.metrics.query_delta_rows.labels("cache").inc(cached_rows)
        self.metrics.query_delta_rows.labels("influxdb").inc(tail_rows)
        headers["X-Moby-Cache"] = overall
        if self.version:
            headers["X-Influxdb-Version"] = self.version
        return Response(memo.body, 200, headers), overall

    def _assemble(self, tails: list[tuple[DeltaPart, int, str, CachedResponse]]) -> CachedResponse | None:
        results: list[dict[str, Any]] = []
        cached_rows = tail_rows = 0
        for index, (part, fetch_from, key, response) in enumerate(tails):
            try:
                tail: list[dict[str, Any]] = orjson.loads(response.body)["results"][0].get("series", [])
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                return None
            series, from_cache = self.delta.assemble(part.template, part.first_bucket_ms, fetch_from, tail)
            step = part.interval_ms
            settled = int((response.created * 1000 - part.settle_ms) // step * step)
            self.delta.merge(part.template, fetch_from, settled, tail, part.span_ms)
            # This answer also holds the tail for requests that start where the held buckets now end.
            held_until = self.delta.covered_until(part.template, part.first_bucket_ms)
            if held_until is not None and held_until > fetch_from:
                alias = orjson.dumps(["delta", part.template, held_until]).decode()
                if self.cache.get(alias) is None:
                    self.cache.put(alias, response, self.cache.remaining_ttl(key))
            cached_rows += from_cache
            tail_rows += sum(len(s["values"]) for s in series) - from_cache
            results.append({"statement_id": index, "series": series} if series else {"statement_id": index})
        headers = (
            ("Content-Type", "application/json"),
            ("X-Moby-Delta", f"cached_rows={cached_rows}, tail_rows={tail_rows}"),
        )
        return CachedResponse(200, orjson.dumps({"results": results}) + b"\n", headers)

    # --- the plan: checks, routing, cache key, TTL -------------------------------------------------
    def plan(self, q: str, params: dict[str, str], accept: str = "", who: Identity = ANONYMOUS) -> Plan:
        """Parse and check ``q``, route "auto", and build what is forwarded and its cache key.

        Raises :class:`~moby.query.influxql.InfluxQLError` (not parsed) or
        :class:`~moby.query.parser.Refused` (parsed, not allowed).
        """
        now = self._clock() * 1000
        statements = parser.parse(q)
        for statement in statements:
            for db in statement.databases:
                if db != self.config.database:
                    raise Refused(f'database "{db}" is not served (only "{self.config.database}")')
        forwarded: dict[str, str] = {k: params[k] for k in _FORWARDED_PARAMS if k in params}
        # The key holds exactly what is forwarded (q as normalised statements), and who asked.
        extra: list[Any] = [sorted(forwarded.items()), accept, who.key]
        texts: list[str] = []
        keys: list[str] = []
        policies: list[str] = []
        ttl = self.config.ttl_s
        rewritten = False
        parts: list[DeltaPart] | None = []
        for statement in statements:
            shape = parser.shape(statement)
            lower = shape.lower.at(now) if shape.lower else None
            upper = shape.upper.at(now) if shape.upper else now
            replace: dict[int, str] = {}
            read: list[str] = []
            for index, name in parser.policies_named(statement):
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
            texts.append(influxql.render(statement.tokens, replace))
            ttl = min(ttl, self._ttl(statement, upper, now, read))
            keys.append(self._key_text(statement, shape, replace, upper, now))
            # Only statements naming "auto" (MOBY's own extension): a plain query gets InfluxDB's
            # answer byte for byte, and a delta answer's first bucket is whole where InfluxDB's is not.
            delta_ok = bool(replace) and eligible(statement, shape, now, NEAR_NOW_MS)
            if parts is not None and lower is not None and delta_ok:
                parts.append(self._delta_part(statement, shape, replace, lower, upper, read, extra))
            else:
                parts = None
        sent = ";".join(texts) if rewritten else influxql.normalize_newlines(q)
        url: dict[str, str] = {}
        if "pretty" in forwarded:  # InfluxDB reads it from the URL only
            url["pretty"] = forwarded.pop("pretty")
        form = dict(forwarded, q=sent)
        key = orjson.dumps([keys, extra]).decode()
        return Plan(sent, key, ttl, policies, parts or None, url, form)

    @staticmethod
    def _delta_part(
        statement: parser.Statement,
        shape: parser.Shape,
        replace: dict[int, str],
        lower: float,
        upper: float,
        read: list[str],
        extra: list[Any],
    ) -> DeltaPart:
        assert shape.lower is not None and shape.interval_ms is not None
        step = int(shape.interval_ms)
        bounds = [(shape.lower, "@lower")] + ([(shape.upper, "@upper")] if shape.upper else [])
        template = _with_bounds(statement.tokens, replace, bounds)
        return DeltaPart(
            template=orjson.dumps([template, extra]).decode(),
            interval_ms=step,
            first_bucket_ms=int(lower // step * step),
            span_ms=upper - lower,
            settle_ms=_settle_ms(read),
            statement=statement.tokens,
            replace=replace,
            lower=shape.lower,
        )

    def _ttl(self, statement: parser.Statement, upper: float, now: float, read: list[str]) -> float:
        if statement.kind.startswith("SHOW"):
            return self.config.meta_ttl_s
        if upper >= now - _settle_ms(read):
            return self.config.recent_ttl_s
        return self.config.ttl_s

    @staticmethod
    def _key_text(
        statement: parser.Statement,
        shape: parser.Shape,
        replace: dict[int, str],
        upper: float,
        now: float,
    ) -> str:
        """The statement normalised; a fixed range ending near now becomes "the last N ms"."""
        lo, hi = shape.lower, shape.upper
        spans: list[tuple[parser.TimeBound, str]] = []
        if hi is not None and not hi.relative and abs(now - upper) <= NEAR_NOW_MS:
            spans = [(hi, "now()")]
            if lo is not None and not lo.relative:
                spans.append((lo, f"now()-{round(hi.ms - lo.ms)}ms"))
        return _with_bounds(statement.tokens, replace, spans)

    def _kept(self, headers: dict[str, str]) -> dict[str, str]:
        kept = {k: v for k, v in headers.items() if k.lower() in _KEPT_HEADERS}
        for k, v in kept.items():
            if k.lower() == "x-influxdb-version":
                self.version = v
        return kept


def _with_bounds(
    tokens: list[influxql.Token], replace: dict[int, str], bounds: list[tuple[parser.TimeBound, str]]
) -> str:
    """The statement normalised, with the given time bounds' expressions replaced by text."""
    replace = dict(replace)
    drop: set[int] = set()
    for bound, text in bounds:
        start, end = bound.span
        replace[start] = text
        drop.update(range(start + 1, end))
    return influxql.normalize(
        [
            t._replace(kind=influxql.Kind.IDENT, text=replace[i]) if i in replace else t
            for i, t in enumerate(tokens)
            if i not in drop
        ]
    )


def proxy_from_settings(
    settings: Settings, metrics: Metrics, access: AccessPolicy | None = None
) -> InfluxProxy:
    """The proxy as ``moby serve`` and ``moby proxy`` configure it from ``MOBY_*`` variables
    (AccessConfigError when the access settings are refused)."""
    s = settings
    if access is None:  # `moby proxy`: listening on MOBY_PROXY_HOST only
        access = AccessPolicy.from_settings(s, [s.proxy_host])
    user, password = s.proxy_influx_username, s.proxy_influx_password
    if user is None:
        user, password = s.influx_username, s.influx_password
        if user is not None:
            log.warning(
                "the query proxy reads InfluxDB as the backend's writer; set MOBY_PROXY_INFLUX_USERNAME "
                "and MOBY_PROXY_INFLUX_PASSWORD to a user holding only READ (docs/SECURITY.md)",
                user=user,
            )
    upstream = InfluxClient(
        s.influx_url,
        s.influx_db,
        username=user,
        password=password.get_secret_value() if password else None,
        timeout_s=s.proxy_timeout_s,
        connections=UPSTREAM_CONNECTIONS,
    )
    config = ProxyConfig(
        database=s.influx_db,
        max_response_bytes=s.proxy_max_response_bytes,
        timeout_s=s.proxy_timeout_s,
        max_concurrent_per_client=s.proxy_max_concurrent_per_client,
        max_waiting_per_client=s.proxy_max_waiting_per_client,
        cache=s.proxy_cache,
        delta=s.proxy_cache_delta,
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
    return InfluxProxy(upstream, metrics, config, access=access)


def _settle_ms(policies: list[str]) -> int:
    """How long the newest bucket of the slowest policy read may still change."""
    return max((SETTLE_MS.get(p, SETTLE_MS["rollup_1m"]) for p in policies), default=SETTLE_MS["rollup_1m"])
