"""Helpers for the query proxy's integration tests: `moby proxy` as a child process, one HTTP
request as a client sends it, and a database seeded at every resolution."""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path

import pytest

from moby.procs import ManagedProcess, free_port, http_ready
from moby.store.bootstrap import Bootstrap
from moby.store.influx import InfluxClient
from moby.store.influxd import Influxd

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
# One value per policy, so an answer shows which policy it was read from.
RAW_X, M1_X, H1_X = 1.0, 2.0, 3.0


class Proxy(ManagedProcess):
    """`moby proxy` as a child process."""

    def __init__(self, directory: Path, influxd: Influxd, db: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(
            "moby proxy",
            [sys.executable, "-m", "moby", "proxy"],
            log_path=directory / f"proxy-{self.port}.log",
            ready=lambda: http_ready(f"{self.url}/metrics"),
            env={
                "MOBY_INFLUX_URL": influxd.url,
                "MOBY_INFLUX_DB": db,
                "MOBY_PROXY_PORT": str(self.port),
                **{k.upper(): v for k, v in env.items()},
            },
        )

    def metric(self, name: str, labels: str = "") -> float:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if not line.startswith("#") and line.split("{")[0].split(" ")[0] == name and labels in line
        )


def http(
    url: str, params: dict[str, str], *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    """Status, headers (looked up case-insensitively) and body of one /query request."""
    data = None
    if method == "POST":
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{url}/query", data=data, method="POST", headers=headers or {})
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    else:
        request = urllib.request.Request(
            f"{url}/query?{urllib.parse.urlencode(params)}", method="GET", headers=headers or {}
        )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def now_ms() -> int:
    return int(time.time() * 1000)


async def seed(url: str, db: str, factory: str = "f1", sensor: str = "s1") -> None:
    """Raw for the last hour, rollup_1m for the last 3 days, rollup_1h for the last 100 days."""
    client = InfluxClient(url, db)
    try:
        await Bootstrap(client).run()
        now = now_ms()
        tags = f"vibration,factory_id={factory},sensor_id={sensor}"
        raw = [f"{tags} x={RAW_X},seq={i}i {now - i * 10_000}" for i in range(1, 360)]
        m0 = now - now % MINUTE_MS
        m1 = [
            f"{tags} x={M1_X},x_min=0.5,x_max=9.5,seq={i}i {m0 - i * MINUTE_MS}" for i in range(10, 3 * 1440)
        ]
        h0 = now - now % HOUR_MS
        h1 = [f"{tags} x={H1_X},x_min=0.1,x_max=20.0,seq={i}i {h0 - i * HOUR_MS}" for i in range(2, 100 * 24)]
        await client.write("\n".join(raw).encode())
        await client.write("\n".join(m1).encode(), retention_policy="rollup_1m")
        await client.write("\n".join(h1).encode(), retention_policy="rollup_1h")
    finally:
        await client.close()


@pytest.fixture
def seeded(influxd: Influxd, db_name: str) -> Iterator[str]:
    asyncio.run(seed(influxd.url, db_name))
    yield db_name
    drop = urllib.parse.urlencode({"q": f'DROP DATABASE "{db_name}"'})
    with urllib.request.urlopen(f"{influxd.url}/query?{drop}", data=b"") as r:
        r.read()  # unread, InfluxDB may abort the statement when the client goes away


@pytest.fixture
def make_proxy(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def make(influxd: Influxd, db: str, **env: str) -> Proxy:
        proxy = Proxy(tmp_path / "proxy", influxd, db, **env)
        proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()
