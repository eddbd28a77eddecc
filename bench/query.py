"""`make bench` (second part): dashboard users through the InfluxQL proxy, with and without its cache.

Starts a private InfluxDB (free port, temporary folder) with one sensor's data at every
resolution (raw at 1 Hz for 6 h, `rollup_1m` for 3 days, `rollup_1h` for 90 days), then, for each
mode, `moby proxy` as a child process and N simulated Grafana users (default 50) refreshing the
*Sensor detail* dashboard every R seconds (default 5, Grafana's shortest default) for D seconds
(default 60). A user's refresh sends the dashboard's five panel queries at once, as Grafana does,
each naming the pseudo retention policy "auto", with Grafana's `$timeFilter` (absolute
milliseconds that move with every refresh) and `$__interval` for the user's time range: users
are spread over 15 minutes, 6 hours, 2 days and 90 days (raw, raw, rollup_1m, rollup_1h).

Measured per mode: requests served, the queries InfluxDB itself counted (`SHOW STATS` httpd
`queryReq`, less the bench's own two) and their rate, and client-side latency percentiles; with
the cache, separately for answers served from it. The proxy's own upstream counter is reported
beside InfluxDB's as a cross-check. The machine is shared and noisy: compare the two modes of
one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from moby.procs import ManagedProcess, free_port, http_ready
from moby.store.bootstrap import Bootstrap
from moby.store.influx import InfluxClient
from moby.store.influxd import Influxd

DB = "bench"
MODES = {"no_cache": (False, False), "cache": (True, True), "cache_whole": (True, False)}
FACTORY, SENSOR = "demo", "s1"
RANGES_S = (900, 6 * 3600, 2 * 86400, 90 * 86400)  # the users' dashboard time ranges
NICE_S = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_DATA_POINTS = 1000  # a wide panel


def grafana_interval(range_s: float) -> str:
    """`$__interval`: the range over the panel's data points, rounded up to a nice step."""
    raw = range_s / MAX_DATA_POINTS
    step = next((n for n in NICE_S if n >= raw), NICE_S[-1])
    return f"{step}s" if step < 60 else (f"{step // 60}m" if step < 3600 else f"{step // 3600}h")


def panels(range_s: float, now_ms: int) -> list[str]:
    """The Sensor detail dashboard's panel queries after Grafana's macro substitution."""
    where = (
        f"(\"factory_id\" = '{FACTORY}' AND \"sensor_id\" = '{SENSOR}') AND "
        f"time >= {now_ms - int(range_s * 1000)}ms and time <= {now_ms}ms"
    )
    group = f"GROUP BY time({grafana_interval(range_s)}) fill(null)"
    src = '"auto"."vibration"'
    return [
        f'SELECT mean("rms_velocity"), max("rms_velocity") FROM {src} WHERE {where} {group}',
        f'SELECT mean("peak_accel") FROM {src} WHERE {where} {group}',
        f'SELECT mean("temperature") FROM {src} WHERE {where} {group}',
        f'SELECT max("seq") FROM {src} WHERE {where} {group}',
        f'SELECT last("rms_velocity") FROM {src} WHERE {where}',
    ]


async def seed(url: str) -> int:
    client = InfluxClient(url, DB, timeout_s=120)
    try:
        await Bootstrap(client).run()
        now = int(time.time() * 1000)
        tags = f"vibration,factory_id={FACTORY},sensor_id={SENSOR}"
        total = 0

        def line(i: int, ts: int, rollup: bool) -> str:
            v = 2.0 + (i % 60) / 30
            fields = f"rms_velocity={v},peak_accel={v / 3},temperature={40 + (i % 600) / 100},seq={i}i"
            if rollup:
                fields += f",rms_velocity_min={v - 0.5},rms_velocity_max={v + 1.5}"
            return f"{tags} {fields} {ts}"

        levels = (("raw", 1000, 6 * 3600), ("rollup_1m", 60_000, 3 * 1440), ("rollup_1h", 3_600_000, 90 * 24))
        for rp, step_ms, count in levels:
            start = now - now % step_ms - count * step_ms
            lines = [line(i, start + i * step_ms, rp != "raw") for i in range(count)]
            for k in range(0, len(lines), 5000):
                await client.write("\n".join(lines[k : k + 5000]).encode(), retention_policy=rp)
            total += count
        return total
    finally:
        await client.close()


def httpd_stats(url: str) -> dict[str, int]:
    """InfluxDB's own /query counters: requests (this one included), time spent, bytes answered."""
    with urllib.request.urlopen(f"{url}/query?q=SHOW+STATS+FOR+%27httpd%27", timeout=10) as r:
        series = orjson.loads(r.read())["results"][0]["series"][0]
    stats = dict(zip(series["columns"], series["values"][0], strict=True))
    return {k: int(stats[k]) for k in ("queryReq", "queryReqDurationNs", "queryRespBytes")}


def proxy_metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if not line.startswith("#") and line.split("{")[0].split(" ")[0] == name
    )


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def run_users(url: str, users: int, refresh_s: float, duration_s: float) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {"all": [], "cached": [], "upstream": []}
    errors = 0
    refreshes = 0
    deadline = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(q: str) -> None:
            nonlocal errors
            started = time.perf_counter()
            params = {"db": DB, "q": q, "epoch": "ms"}
            async with session.get(f"{url}/query", params=params) as r:
                await r.read()
                elapsed = time.perf_counter() - started
                if r.status != 200:
                    errors += 1
                    return
                outcome = r.headers.get("X-Moby-Cache", "")
            latencies["all"].append(elapsed)
            latencies["cached" if outcome in ("hit", "coalesced") else "upstream"].append(elapsed)

        async def user(index: int) -> None:
            nonlocal refreshes
            range_s = RANGES_S[index % len(RANGES_S)]
            await asyncio.sleep(random.uniform(0, refresh_s))  # users did not all open at once
            while time.monotonic() < deadline:
                began = time.monotonic()
                now_ms = int(time.time() * 1000)
                await asyncio.gather(*(one(q) for q in panels(range_s, now_ms)))
                refreshes += 1
                await asyncio.sleep(max(0.0, refresh_s - (time.monotonic() - began)))

        await asyncio.gather(*(user(i) for i in range(users)))
    return {
        "requests": len(latencies["all"]),
        "refreshes": refreshes,
        "errors": errors,
        "latency_ms": {
            kind: {p: ms(pct(v, float(p[1:]))) for p in ("p50", "p95", "p99")} | {"n": len(v)}
            for kind, v in latencies.items()
        },
    }


class Proxy(ManagedProcess):
    def __init__(self, workdir: Path, influx_url: str, cache: bool, delta: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            "moby proxy",
            [sys.executable, "-m", "moby", "proxy"],
            log_path=workdir / f"proxy-{'cache' if cache else 'nocache'}-{'delta' if delta else 'whole'}.log",
            ready=lambda: http_ready(f"{self.url}/metrics"),
            env={
                **os.environ,
                "MOBY_INFLUX_URL": influx_url,
                "MOBY_INFLUX_DB": DB,
                "MOBY_PROXY_PORT": str(self.port),
                "MOBY_PROXY_CACHE": "true" if cache else "false",
                "MOBY_PROXY_CACHE_DELTA": "true" if delta else "false",
                "MOBY_LOG_LEVEL": "warning",
            },
        )


def mode(
    influxd: Influxd, workdir: Path, cache: bool, delta: bool, args: argparse.Namespace
) -> dict[str, Any]:
    proxy = Proxy(workdir, influxd.url, cache, delta)
    proxy.start()
    try:
        before = httpd_stats(influxd.url)
        started = time.monotonic()
        result = asyncio.run(run_users(proxy.url, args.users, args.refresh, args.duration))
        wall = time.monotonic() - started
        after = httpd_stats(influxd.url)
        upstream = after["queryReq"] - before["queryReq"] - 1  # less the second SHOW STATS
        result.update(
            cache=cache,
            delta=cache and delta,
            wall_s=round(wall, 2),
            influx_queries=upstream,
            influx_queries_per_s=round(upstream / wall, 2),
            # InfluxDB's time answering /query (summed over concurrent requests) and bytes answered
            influx_busy_ms_per_s=round(
                (after["queryReqDurationNs"] - before["queryReqDurationNs"]) / 1e6 / wall, 1
            ),
            influx_kib_per_s=round((after["queryRespBytes"] - before["queryRespBytes"]) / 1024 / wall, 1),
            requests_per_s=round(result["requests"] / wall, 2),
            influx_queries_per_request=round(upstream / max(result["requests"], 1), 4),
            proxy_upstream_counter=int(proxy_metric(proxy.url, "moby_query_upstream_requests_total")),
        )
        return result
    finally:
        proxy.stop()


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per mode")
    parser.add_argument("--refresh", type=float, default=5.0, help="dashboard refresh interval, seconds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=["no_cache", "cache"],
        help="no_cache, cache (with delta caching), cache_whole (delta caching off)",
    )
    args = parser.parse_args()
    random.seed(7)
    with tempfile.TemporaryDirectory(prefix="moby-bench-query-") as tmp:
        workdir = Path(tmp)
        influxd = Influxd(workdir / "influxd", free_port(), free_port())
        influxd.start(timeout_s=60)
        try:
            points = asyncio.run(seed(influxd.url))
            results = {
                "machine": machine(),
                "setup": {
                    "users": args.users,
                    "refresh_s": args.refresh,
                    "duration_s": args.duration,
                    "panels": len(panels(900, 0)),
                    "ranges_s": RANGES_S,
                    "points_seeded": points,
                },
            }
            for name in args.modes:
                results[name] = mode(influxd, workdir, *MODES[name], args)
        finally:
            influxd.stop()
    setup = results["setup"]
    print(
        f"{args.users} users × {setup['panels']} panels, refresh {args.refresh:g} s, "
        f"{args.duration:g} s per mode"
    )
    columns = ("mode", "req/s", "influx q/s", "q/req", "busy ms/s", "KiB/s", "p50 ms", "p95 ms", "cached p95")
    print(f"{columns[0]:<12}" + "".join(f"{c:>11}" for c in columns[1:]))
    for name in args.modes:
        r = results[name]
        lat = r["latency_ms"]
        cells: tuple[Any, ...] = (
            r["requests_per_s"],
            r["influx_queries_per_s"],
            r["influx_queries_per_request"],
            r["influx_busy_ms_per_s"],
            r["influx_kib_per_s"],
            lat["all"]["p50"],
            lat["all"]["p95"],
            lat["cached"]["p95"],
        )
        print(
            f"{name:<12}"
            + "".join(f"{c!s:>11}" for c in cells)
            + (f"  errors: {r['errors']}" if r["errors"] else "")
        )
    if "no_cache" in results:
        off = results["no_cache"]
        for name in args.modes:
            if name == "no_cache":
                continue
            on = results[name]
            fewer = 1 - on["influx_queries_per_s"] / max(off["influx_queries_per_s"], 1e-9)
            per_request = 1 - on["influx_queries_per_request"] / max(off["influx_queries_per_request"], 1e-9)
            on["fewer_influx_queries"] = round(fewer, 4)
            on["fewer_influx_queries_per_request"] = round(per_request, 4)
            print(
                f"{name}: {fewer:.1%} fewer InfluxDB queries/s "
                f"({per_request:.1%} fewer per dashboard request)"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
