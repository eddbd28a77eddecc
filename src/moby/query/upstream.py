"""One query to InfluxDB, bounded: in answer size, in time, and in concurrency per client.

* **Size**: the answer is read in chunks and refused (:class:`TooLarge`) as soon as it passes the
  limit — a ``SELECT * FROM /.*/`` never sits in memory whole. Closing the connection early also
  makes InfluxDB stop the query (it watches for the client going away).
* **Time**: the whole exchange, waiting for a slot included, is bounded (:class:`Timeout`).
* **Concurrency**: each client (see :class:`ClientLimiter`) has at most ``per_client`` queries
  running upstream; up to ``max_waiting`` more wait for a slot (a Grafana server is one client
  for all its users), more than that are refused (:class:`Busy`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp

from moby.store.influx import InfluxClient


class UpstreamError(Exception):
    """InfluxDB could not be asked, or its answer cannot be passed on."""


class Unreachable(UpstreamError):
    pass


class TooLarge(UpstreamError):
    pass


class Timeout(UpstreamError):
    pass


class Busy(UpstreamError):
    pass


@dataclass
class _Client:
    slots: asyncio.Semaphore
    users: int = 0  # running and waiting


@dataclass
class ClientLimiter:
    """At most ``per_client`` concurrent upstream queries per client; bounded waiting beyond."""

    per_client: int
    max_waiting: int = 256
    _clients: dict[str, _Client] = field(default_factory=dict)
    inflight: int = 0  # all clients: running upstream
    waiting: int = 0  # all clients: waiting for a slot

    @asynccontextmanager
    async def slot(self, client: str) -> AsyncIterator[None]:
        state = self._clients.get(client)
        if state is None:
            state = self._clients[client] = _Client(asyncio.Semaphore(self.per_client))
        if state.users >= self.per_client + self.max_waiting:
            raise Busy(
                f"too many concurrent queries from this client ({state.users} running or waiting: "
                f"{self.per_client} run at a time, MOBY_PROXY_MAX_CONCURRENT_PER_CLIENT, and "
                f"{self.max_waiting} wait, MOBY_PROXY_MAX_WAITING_PER_CLIENT)"
            )
        state.users += 1
        self.waiting += 1
        waiting = True
        try:
            async with state.slots:
                self.waiting, waiting = self.waiting - 1, False
                self.inflight += 1
                try:
                    yield
                finally:
                    self.inflight -= 1
        finally:
            if waiting:  # gave up waiting (timed out, cancelled)
                self.waiting -= 1
            state.users -= 1
            if state.users == 0:  # idle clients are forgotten: the map is bounded by live requests
                del self._clients[client]

    def __len__(self) -> int:
        return len(self._clients)


async def fetch(
    client: InfluxClient,
    *,
    url_params: dict[str, str],
    form: dict[str, str],
    headers: dict[str, str] | None,
    max_bytes: int,
) -> tuple[int, dict[str, str], bytes]:
    """POST /query with these parameters; status, headers and the body (at most ``max_bytes``)."""
    try:
        async with client.session.post(
            f"{client.url}/query", params=url_params, data=form, headers=headers
        ) as r:
            declared = r.content_length
            if declared is not None and declared > max_bytes:
                r.close()
                raise _too_large(max_bytes)
            chunks: list[bytes] = []
            size = 0
            async for chunk in r.content.iter_any():
                size += len(chunk)
                if size > max_bytes:
                    r.close()  # drops the connection: InfluxDB stops the query
                    raise _too_large(max_bytes)
                chunks.append(chunk)
            return r.status, dict(r.headers), b"".join(chunks)
    except TimeoutError as exc:
        raise Timeout("InfluxDB did not answer in time") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise Unreachable(f"InfluxDB unreachable: {type(exc).__name__}: {exc}") from exc


def _too_large(max_bytes: int) -> TooLarge:
    return TooLarge(
        f"the answer is larger than the proxy's limit of {max_bytes} bytes "
        "(MOBY_PROXY_MAX_RESPONSE_BYTES): narrow the time range, select fewer fields, "
        "aggregate with GROUP BY time() or add a LIMIT"
    )
