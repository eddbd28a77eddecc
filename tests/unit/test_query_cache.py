"""The proxy's cache (bytes-bounded LRU, TTL, single flight) and its plan: keys and TTLs."""

from __future__ import annotations

import asyncio

import pytest

from moby.metrics import Metrics
from moby.query.cache import CachedResponse, ResponseCache
from moby.query.parser import Refused
from moby.query.proxy import InfluxProxy, ProxyConfig
from moby.store.influx import InfluxClient

NOW_S = 1_764_139_251.123
NOW_MS = int(NOW_S * 1000)


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def response(size: int) -> CachedResponse:
    return CachedResponse(200, b"x" * size)


def test_ttl_and_lru_by_bytes() -> None:
    clock = Clock()
    cache = ResponseCache(8 * 1024, clock=clock)
    assert cache.put("a", response(500), ttl_s=10)
    assert cache.get("a") is not None
    clock.t = 10.0
    assert cache.get("a") is None and cache.bytes == 0  # expired, and its bytes given back
    for key in "abcdefghijkl":  # 12 × ~960 bytes > 8 KiB
        cache.put(key, response(700), ttl_s=100)
        if key == "h":
            assert cache.get("a") is not None  # "a" is now the most recently used
    assert cache.bytes <= cache.max_bytes
    assert cache.evictions == 4
    assert [k for k in "abcdefghijkl" if cache.get(k) is None] == ["b", "c", "d", "e"]  # least recent first
    assert not cache.put("huge", response(2000), ttl_s=100)  # > 1/8 of the bound: not kept
    assert not cache.put("zero", response(10), ttl_s=0)


async def test_single_flight() -> None:
    cache = ResponseCache(1 << 20)
    calls = 0

    async def load() -> tuple[CachedResponse, float]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return response(10), 5.0

    outcomes = await asyncio.gather(*(cache.fetch("k", load) for _ in range(20)))
    assert calls == 1
    assert sorted(o for _, o in outcomes) == ["coalesced"] * 19 + ["miss"]
    assert (await cache.fetch("k", load))[1] == "hit" and calls == 1


async def test_a_failed_load_is_shared_and_not_kept() -> None:
    cache = ResponseCache(1 << 20)

    async def load() -> tuple[CachedResponse, float]:
        await asyncio.sleep(0.01)
        raise OSError("down")

    results = await asyncio.gather(*(cache.fetch("k", load) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert len(cache) == 0


def proxy(**config: float) -> InfluxProxy:
    return InfluxProxy(
        InfluxClient("http://127.0.0.1:1", "db"),
        Metrics(),
        ProxyConfig(database="db", **config),
        clock=lambda: NOW_S,
    )


def grafana(span_ms: int, end_ms: int = NOW_MS, interval: str = "1s") -> str:
    return (
        f'SELECT mean("x") FROM "auto"."m" WHERE ("sensor_id" = \'s1\') AND time >= {end_ms - span_ms}ms '
        f"and time <= {end_ms}ms GROUP BY time({interval}) fill(null)"
    )


def test_plan_routes_and_sets_ttls() -> None:
    p = proxy(ttl_s=3600, recent_ttl_s=5, meta_ttl_s=30)
    recent = p.plan(grafana(900_000), {"db": "db"})
    assert recent.policies == ["raw"] and recent.ttl_s == 5
    assert '"raw"."m"' in recent.q and '"auto"' not in recent.q
    # A range that ended a day ago is complete: kept long.
    old = p.plan(grafana(2 * 86_400_000, NOW_MS - 86_400_000, "5m"), {"db": "db"})
    assert old.policies == ["rollup_1m"] and old.ttl_s == 3600
    # ... but one that ended 3 minutes ago may still change (rollup_1m's query resamples 5 min).
    assert p.plan(grafana(2 * 86_400_000, NOW_MS - 180_000, "5m"), {}).ttl_s == 5
    assert p.plan("SHOW TAG VALUES WITH KEY = sensor_id", {}).ttl_s == 30
    # Several statements: the shortest TTL wins; each is routed on its own.
    both = p.plan(grafana(900_000) + ";" + grafana(90 * 86_400_000, NOW_MS - 86_400_000 * 3, "3h"), {})
    assert both.policies == ["raw", "rollup_1h"] and both.ttl_s == 5
    with pytest.raises(Refused):
        p.plan(grafana(900_000) + "; DROP DATABASE db", {})


def test_plain_queries_are_forwarded_unchanged() -> None:
    q = 'select  *  from "raw"."m" -- as written\n limit 1'
    assert proxy().plan(q, {}).q == q


def test_moving_windows_share_a_key_fixed_ones_do_not() -> None:
    p = proxy()
    a = p.plan(grafana(900_000, NOW_MS - 2_000), {"db": "db", "epoch": "ms"})
    b = p.plan(grafana(900_000, NOW_MS), {"db": "db", "epoch": "ms"})
    assert a.key == b.key  # Grafana's "last 15 minutes", two seconds apart
    assert p.plan(grafana(3_600_000), {"db": "db", "epoch": "ms"}).key != b.key  # another view
    assert p.plan(grafana(900_000), {"db": "db", "epoch": "s"}).key != b.key  # another epoch
    assert p.plan(grafana(900_000), {"db": "other", "epoch": "ms"}).key != b.key
    # Fixed ranges in the past are keyed by their times.
    day = 86_400_000
    assert (
        p.plan(grafana(900_000, NOW_MS - day), {}).key
        != p.plan(grafana(900_000, NOW_MS - day - 2000), {}).key
    )


@pytest.mark.parametrize(
    ("q", "ok"),
    [
        (grafana(900_000), True),
        (grafana(900_000).replace("fill(null)", "fill(none)"), True),
        (grafana(900_000).replace("fill(null)", "fill(previous)"), False),  # carries values over the split
        (grafana(900_000).replace("time(1s)", "time(1s, 500ms)"), False),  # an offset
        (grafana(900_000) + " LIMIT 10", False),
        (grafana(900_000) + " ORDER BY time DESC", False),
        (grafana(900_000, NOW_MS - 86_400_000), False),  # a past range: complete, cached whole instead
        ('SELECT mean("x") FROM "auto"."m" WHERE time > now() - 1h GROUP BY time(1m)', True),
        ('SELECT mean("x") FROM "raw"."m" WHERE time > now() - 1h GROUP BY time(1m)', False),  # not "auto"
        ('SELECT mean("x") FROM "auto"."m" WHERE time > now() - 1h', False),  # no buckets
        (
            'SELECT mean(m) FROM (SELECT x AS m FROM "auto"."m") WHERE time > now() - 1h GROUP BY time(1m)',
            False,
        ),
    ],
)
def test_delta_eligibility(q: str, ok: bool) -> None:
    plan = proxy().plan(q, {"db": "db", "epoch": "ms"})
    assert (plan.delta is not None) == ok


def test_delta_merge_and_assemble() -> None:
    from moby.query.delta import DeltaCache

    cache = DeltaCache(1 << 20)

    def series(tag: str, start: int, end: int) -> dict[str, object]:
        values = [[t, t / 10] for t in range(start, end, 10)]
        return {"name": "m", "tags": {"s": tag}, "columns": ["time", "mean"], "values": values}

    # First answer from 0: buckets below 50 are complete.
    cache.merge("T", 0, 50, [series("a", 0, 70), series("b", 0, 70)], span_ms=70)
    assert cache.covered_until("T", 0) == 50 and cache.covered_until("T", 50) is None
    # The next refresh asks InfluxDB from 50 only, and gets held buckets 10..40 plus its tail.
    out, from_cache = cache.assemble("T", 10, 50, [series("a", 50, 90)])
    assert from_cache == 8
    assert [s["tags"] for s in out] == [{"s": "a"}, {"s": "b"}]
    assert [v[0] for v in out[0]["values"]] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert [v[0] for v in out[1]["values"]] == [10, 20, 30, 40]
    cache.merge("T", 50, 80, [series("a", 50, 90)], span_ms=70)
    assert cache.covered_until("T", 10) == 80


def test_the_key_holds_who_asked_and_what_is_forwarded() -> None:
    from moby.access import ANONYMOUS, Identity
    from moby.tokens import Role

    p = proxy()
    q = 'SELECT "x" FROM "raw"."m" WHERE time > now() - 1h'
    alice, bob = Identity("alice", Role.VIEWER, "a1"), Identity("bob", Role.VIEWER, "b2")
    keys = {
        p.plan(q, {"db": "db"}, "", ANONYMOUS).key,
        p.plan(q, {"db": "db"}, "", alice).key,
        p.plan(q, {"db": "db"}, "", bob).key,
        p.plan(q, {"db": "db", "epoch": "ms"}, "", alice).key,
        p.plan(q, {"db": "db"}, "application/csv", alice).key,
    }
    assert len(keys) == 5
    # Parameters that are not forwarded do not key (nor reach InfluxDB).
    plan = p.plan(q, {"db": "db", "u": "x", "p": "secret", "other": "1"}, "", alice)
    assert plan.key == p.plan(q, {"db": "db"}, "", alice).key
    assert plan.form == {"db": "db", "q": q} and plan.url == {}
    assert p.plan(q, {"db": "db", "pretty": "true"}).url == {"pretty": "true"}


def test_other_databases_are_refused_by_the_plan() -> None:
    p = proxy()
    for q in ('SELECT * FROM "other"."rp"."m"', "SELECT * FROM _internal..m", "SHOW MEASUREMENTS ON x"):
        with pytest.raises(Refused, match="is not served"):
            p.plan(q, {})
    assert p.plan('SELECT * FROM "db"."rp"."m"', {}).form["q"] == 'SELECT * FROM "db"."rp"."m"'


async def params_of(method: str, query: str, body: bytes = b"", content_type: str = "") -> dict[str, str]:
    from starlette.requests import Request

    from moby.query.influxhttp import canonical_params

    headers = [(b"content-type", content_type.encode())] if content_type else []
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": method,
        "query_string": query.encode(),
        "headers": headers,
        "path": "/",
    }
    return await canonical_params(Request(scope, receive))


FORM = "application/x-www-form-urlencoded"


async def test_one_set_of_parameters() -> None:
    from moby.query.influxhttp import BadRequest

    assert await params_of("GET", "db=moby&q=SHOW+MEASUREMENTS") == {"db": "moby", "q": "SHOW MEASUREMENTS"}
    both = await params_of("POST", "db=moby", b"q=SHOW+MEASUREMENTS&epoch=ms", FORM)
    assert both == {"db": "moby", "q": "SHOW MEASUREMENTS", "epoch": "ms"}
    for method, query, body in (
        ("POST", "epoch=s&q=x", b"epoch=ms"),  # the cache-poisoning request of the report
        ("POST", "db=other&q=x", b"db=moby"),
        ("GET", "q=a&q=b", b""),
        ("POST", "", b"q=a&db=moby&db=moby"),  # even the same value twice
    ):
        with pytest.raises(BadRequest, match="more than once"):
            await params_of(method, query, body, FORM)
    with pytest.raises(BadRequest, match="application/x-www-form-urlencoded"):
        await params_of("POST", "q=x", b'{"q": "DROP DATABASE moby"}', "application/json")
    with pytest.raises(BadRequest, match="larger than"):
        await params_of("POST", "", b"q=" + b"x" * (1024 * 1024 + 1), FORM)


async def test_the_per_client_limiter() -> None:
    from moby.query.upstream import Busy, ClientLimiter

    waiting = 8
    limiter = ClientLimiter(per_client=1, max_waiting=waiting)
    release = asyncio.Event()
    entered: list[int] = []

    async def use(client: str, n: int) -> None:
        async with limiter.slot(client):
            entered.append(n)
            await release.wait()

    tasks = [asyncio.create_task(use("a", n)) for n in range(waiting)]
    other = asyncio.create_task(use("b", 99))  # another client has slots of its own
    await asyncio.sleep(0.01)
    assert entered == [0, 99] and limiter.inflight == 2 and limiter.waiting == waiting - 1
    # A waiter that gives up (the query's time limit) leaves no trace.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01), limiter.slot("a"):
            pass
    assert limiter.waiting == waiting - 1
    tasks.append(asyncio.create_task(use("a", waiting)))
    await asyncio.sleep(0.01)
    with pytest.raises(Busy, match="too many concurrent queries"):  # 1 running, 8 waiting: full
        async with limiter.slot("a"):
            pass
    release.set()
    await asyncio.gather(*tasks, other)
    assert sorted(entered) == [*range(1 + waiting), 99]
    assert limiter.inflight == 0 and limiter.waiting == 0 and len(limiter) == 0
