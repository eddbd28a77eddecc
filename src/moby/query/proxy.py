"""A read-only, caching InfluxQL proxy in front of InfluxDB, for Grafana and the ``influx`` CLI.

It answers InfluxDB 1.x's own ``/ping`` and ``/query`` (GET and POST, ``db``, ``rp``, ``epoch``,
``chunked``, ``params``), takes MOBY's API tokens as InfluxDB clients send credentials (basic
auth or ``p`` with the token as the password, or ``Authorization: Bearer``; :mod:`moby.access`),
forwards read-only InfluxQL with the backend's own InfluxDB credentials, and

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

import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from moby.access import AccessPolicy, Identity, Refusal, influx_credential
from moby.config import Settings
from moby.metrics import Metrics
from moby.query import influxql
from moby.query.cache import CachedResponse, Loader, Outcome, ResponseCache
from moby.query.delta import DeltaCache, DeltaPart, eligible
from moby.query.influxhttp import influx_error, request_params
from moby.query.routing import Resolution, choose, default_resolutions, retention_ms
from moby.store.influx import InfluxClient, InfluxError, quote_ident
from moby.tokens import Role

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
    cache: bool = True
    delta: bool = True
    cache_max_bytes: int = 64 * 1024 * 1024
    ttl_s: float = 3600.0
    recent_ttl_s: float = 5.0
    meta_ttl_s: float = 30.0
    resolutions: tuple[Resolution, ...] = field(default_factory=default_resolutions)


@dataclass
class Plan:
    """A query after checks and routing: what to send, its cache key, how long to keep it."""

    q: str
    key: str
    ttl_s: float
    policies: list[str]
    delta: list[DeltaPart] | None = None  # when every statement can be answered by delta caching


class InfluxProxy:
    def __init__(
        self,
        upstream: InfluxClient,
        metrics: Metrics,
        config: ProxyConfig,
        clock: Callable[[], float] = time.time,
        access: AccessPolicy | None = None,
    ) -> None:
        self.upstream = upstream
        self.access = access or AccessPolicy.open()
        self.metrics = metrics
        self.config = config
        # The bound is shared: half for whole answers, half for the delta cache's buckets.
        self.cache = ResponseCache(config.cache_max_bytes // 2)
        self.delta = DeltaCache(config.cache_max_bytes // 2, max_age_s=config.ttl_s)
        self._clock = clock
        self.version = ""  # InfluxDB's, learnt from its answers and repeated on ours
        metrics.query_cache_bytes.set_function(lambda: self.cache.bytes)
        metrics.query_cache_entries.set_function(lambda: len(self.cache))
        metrics.query_cache_evictions.set_function(lambda: self.cache.evictions)
        metrics.query_delta_bytes.set_function(lambda: self.delta.bytes)

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
        if isinstance(refused := self._authenticate(request, dict(request.query_params)), Response):
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
        params = await request_params(request)
        if isinstance(refused := self._authenticate(request, params), Response):
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
        params = await request_params(request)
        identity = self._authenticate(request, params)
        if isinstance(identity, Response):
            self.metrics.query_requests.labels("unauthorized").inc()
            return identity
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
        if self.config.cache and self.config.delta and plan.delta and self._delta_request(params, accept):
            try:
                answered = await self._delta_answer(plan.delta, in_url, in_body, accept)
            except InfluxError as exc:
                self.metrics.query_requests.labels("upstream_error").inc()
                return influx_error(f"InfluxDB unreachable: {exc}", 502, self.version)
            if answered is not None:
                response, delta_outcome = answered
                self._count(delta_outcome, started)
                if plan.policies:
                    response.headers["X-Moby-Policy"] = ",".join(plan.policies)
                return response
        outcome: Outcome
        try:
            load = self._loader(in_url, in_body, accept, plan.ttl_s)
            if self.config.cache:
                cached, outcome = await self.cache.fetch(plan.key, load)
            else:
                cached, outcome = (await load())[0], "bypass"
        except InfluxError as exc:
            self.metrics.query_requests.labels("upstream_error").inc()
            return influx_error(f"InfluxDB unreachable: {exc}", 502, self.version)
        self._count(outcome, started)
        headers = dict(cached.headers)
        headers["X-Moby-Cache"] = outcome
        if plan.policies:
            headers["X-Moby-Policy"] = ",".join(plan.policies)
        return Response(cached.body, cached.status, headers)

    def _count(self, outcome: Outcome, started: float) -> None:
        self.metrics.query_requests.labels(outcome).inc()
        served_from_cache = outcome in ("hit", "coalesced")
        (self.metrics.query_cache_hits if served_from_cache else self.metrics.query_cache_misses).inc()
        self.metrics.query_latency.labels("hit" if served_from_cache else "upstream").observe(
            time.perf_counter() - started
        )

    def _loader(
        self, in_url: dict[str, str], in_body: dict[str, str], accept: str | None, ttl_s: float
    ) -> Loader:
        async def load() -> tuple[CachedResponse, float]:
            self.metrics.query_upstream.inc()
            status, headers, body = await self.upstream.forward(
                "POST", "/query", params=in_url, data=in_body, headers={"Accept": accept} if accept else None
            )
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
        self, parts: list[DeltaPart], in_url: dict[str, str], in_body: dict[str, str], accept: str | None
    ) -> tuple[Response, Outcome] | None:
        """Held complete buckets plus a (shared, briefly cached) tail query per statement; None to
        fall back to the whole answer (an error, or an answer not shaped as expected)."""
        tails: list[tuple[DeltaPart, int, str, CachedResponse]] = []
        fetched = False
        for part in parts:
            held_until = self.delta.covered_until(part.template, part.first_bucket_ms)
            fetch_from = part.first_bucket_ms if held_until is None else held_until
            key = orjson.dumps(["delta", part.template, fetch_from]).decode()
            body = {**in_body, "q": part.text_from(fetch_from)}
            response, outcome = await self.cache.fetch(
                key, self._loader(in_url, body, accept, self.config.recent_ttl_s)
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
        extra = sorted((k, v) for k, v in params.items() if k in _FORWARDED_PARAMS)
        parts: list[DeltaPart] | None = []
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
            # Only statements naming "auto" (MOBY's own extension): a plain query gets InfluxDB's
            # answer byte for byte, and a delta answer's first bucket is whole where InfluxDB's is not.
            delta_ok = bool(replace) and eligible(statement, shape, now, NEAR_NOW_MS)
            if parts is not None and lower is not None and delta_ok:
                parts.append(self._delta_part(statement, shape, replace, lower, upper, read, extra))
            else:
                parts = None
        key = orjson.dumps([keys, extra, sorted(url_params), accept]).decode()
        return Plan(";".join(texts) if rewritten else q, key, ttl, policies, parts or None)

    @staticmethod
    def _delta_part(
        statement: list[influxql.Token],
        shape: influxql.Shape,
        replace: dict[int, str],
        lower: float,
        upper: float,
        read: list[str],
        extra: list[tuple[str, str]],
    ) -> DeltaPart:
        assert shape.lower is not None and shape.interval_ms is not None
        step = int(shape.interval_ms)
        bounds = [(shape.lower, "@lower")] + ([(shape.upper, "@upper")] if shape.upper else [])
        template = _with_bounds(statement, replace, bounds)
        return DeltaPart(
            template=orjson.dumps([template, extra]).decode(),
            interval_ms=step,
            first_bucket_ms=int(lower // step * step),
            span_ms=upper - lower,
            settle_ms=_settle_ms(read),
            statement=statement,
            replace=replace,
            lower=shape.lower,
        )

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
        if upper >= now - _settle_ms(read):
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
        lo, hi = shape.lower, shape.upper
        spans: list[tuple[influxql.TimeBound, str]] = []
        if hi is not None and not hi.relative and abs(now - upper) <= NEAR_NOW_MS:
            spans = [(hi, "now()")]
            if lo is not None and not lo.relative:
                spans.append((lo, f"now()-{round(hi.ms - lo.ms)}ms"))
        return _with_bounds(statement, replace, spans)

    def _authenticate(self, request: Request, params: dict[str, str]) -> Identity | Response:
        """Who is asking (``Identity.key`` is what answers may be cached by), or InfluxDB's 401.

        The token as InfluxDB clients send credentials (:func:`moby.access.influx_credential`);
        required as the API's tokens are (by ``MOBY_API_AUTH`` and where the process listens).
        """
        try:
            return self.access.authorize(
                influx_credential(request.headers, params), Role.VIEWER, "the InfluxQL proxy"
            )
        except Refusal as refusal:
            # InfluxDB's own messages, which its clients (and Grafana) show as they are.
            message = (
                "unable to parse authentication credentials" if refusal.missing else "authorization failed"
            )
            response = influx_error(f"{message}: {refusal.message}", refusal.status, self.version)
            if refusal.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="moby", Bearer realm="moby"'
            return response

    def _kept(self, headers: dict[str, str]) -> dict[str, str]:
        kept = {k: v for k, v in headers.items() if k.lower() in _KEPT_HEADERS}
        for k, v in kept.items():
            if k.lower() == "x-influxdb-version":
                self.version = v
        return kept


def _with_bounds(
    statement: list[influxql.Token], replace: dict[int, str], bounds: list[tuple[influxql.TimeBound, str]]
) -> str:
    """The statement normalised, with the given time bounds' expressions replaced by text."""
    replace = dict(replace)
    drop: set[int] = set()
    for bound, text in bounds:
        start, end = bound.span
        replace[start] = text
        drop.update(range(start + 1, end))
    return influxql.normalize(
        [influxql.Token(t.kind, replace.get(i, t.text)) for i, t in enumerate(statement) if i not in drop]
    )


def proxy_from_settings(
    settings: Settings, metrics: Metrics, access: AccessPolicy | None = None
) -> InfluxProxy:
    """The proxy as ``moby serve`` and ``moby proxy`` configure it from ``MOBY_*`` variables
    (AccessConfigError when the access settings are refused)."""
    s = settings
    if access is None:  # `moby proxy`: listening on MOBY_PROXY_HOST only
        access = AccessPolicy.from_settings(s, [s.proxy_host])
    upstream = InfluxClient(
        s.influx_url,
        s.influx_db,
        username=s.influx_username,
        password=s.influx_password.get_secret_value() if s.influx_password else None,
        timeout_s=s.proxy_timeout_s,
        connections=64,
    )
    config = ProxyConfig(
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
