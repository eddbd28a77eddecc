"""A response cache bounded in bytes (least recently used out first), with request coalescing.

Concurrent misses for one key wait for a single upstream request ("single flight"): when fifty
dashboards refresh at once, InfluxDB sees the query once. Entries carry their own time to live,
chosen by the proxy from the query's time range (see :mod:`moby.query.proxy`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal

Outcome = Literal["hit", "miss", "coalesced", "uncacheable", "bypass"]

_ENTRY_OVERHEAD: Final = 256  # bytes of bookkeeping per entry, roughly


@dataclass(frozen=True)
class CachedResponse:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=())
    created: float = 0.0  # when InfluxDB answered (epoch seconds): what "complete" is judged against

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + _ENTRY_OVERHEAD


Loader = Callable[[], Awaitable[tuple[CachedResponse, float]]]


class ResponseCache:
    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        # Larger answers are served but not kept: one raw dump must not flush every dashboard.
        self.max_entry_bytes = max_bytes // 8
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedResponse]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[CachedResponse]] = {}
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, response = entry
        if expires <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return response

    def remaining_ttl(self, key: str) -> float:
        entry = self._entries.get(key)
        return 0.0 if entry is None else max(0.0, entry[0] - self._clock())

    def put(self, key: str, response: CachedResponse, ttl_s: float) -> bool:
        if ttl_s <= 0 or response.size > self.max_entry_bytes:
            return False
        self._remove(key)
        self._entries[key] = (self._clock() + ttl_s, response)
        self.bytes += response.size + len(key)
        while self.bytes > self.max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1
        return True

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1].size + len(key)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    async def fetch(self, key: str, load: Loader) -> tuple[CachedResponse, Outcome]:
        """The cached answer, or the one a concurrent request is already loading, or a new one."""
        cached = self.get(key)
        if cached is not None:
            return cached, "hit"
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), "coalesced"
        future: asyncio.Future[CachedResponse] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            response, ttl = await load()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(response)
        stored = self.put(key, response, ttl)
        return response, "miss" if stored else "uncacheable"
