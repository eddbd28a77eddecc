"""Group commit: many messages, one durable transaction, then every one of them is acknowledged.

The subscriber hands each processed message to :meth:`GroupCommitter.submit` and awaits it;
the MQTT PUBACK goes out only when that await returns, i.e. after the message's queue row (or
dead letter) is on disk. Messages arriving while a commit runs form the next group, so under
load groups grow by themselves and fsyncs stay few. When the queue is at its byte bound the
committer waits for room *before* committing: nothing is acknowledged, the broker's in-flight
window (the client's receive maximum) fills, and the broker keeps the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from moby.ingest.queue import DeadLetter, DurableQueue, Segment
from moby.ingest.registry import Registry
from moby.metrics import Metrics

log = structlog.get_logger(__name__)


class GroupCommitter:
    def __init__(
        self,
        queue: DurableQueue,
        registry: Registry,
        metrics: Metrics,
        *,
        max_messages: int = 2000,
        interval_s: float = 0.005,
        segment_points: int = 5000,
    ) -> None:
        self._queue = queue
        self._registry = registry
        self._metrics = metrics
        self._max_messages = max_messages
        self._interval_s = interval_s
        self._segment_points = segment_points
        self._messages = 0
        self._segments: list[Segment] = []
        self._lines: list[bytes] = []
        self._points = 0
        self._first_ts_ms = 0
        self._received_ms = 0
        self._dead: list[DeadLetter] = []
        self._group: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.committed = asyncio.Event()  # set after every commit: wakes the writer
        # Why the last group commit failed, while commits fail (disk full, I/O error); else None.
        self.storage_error: str | None = None
        self._failing_since = 0.0

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._loop(), name="group-commit")
        return self._task

    def _current_group(self) -> asyncio.Future[None]:
        if self._group is None:
            self._group = asyncio.get_running_loop().create_future()
            self._wake.set()
        return self._group

    def submit(self, lines: bytes, points: int, first_ts_ms: int) -> asyncio.Future[None]:
        """Queue a message's line protocol into the next group; resolves once it is durable."""
        if not self._lines:
            self._first_ts_ms, self._received_ms = first_ts_ms, int(time.time() * 1000)
        elif first_ts_ms < self._first_ts_ms:
            self._first_ts_ms = first_ts_ms
        self._lines.append(lines)
        self._points += points
        if self._points >= self._segment_points:
            self._cut_segment()
        self._messages += 1
        group = self._current_group()
        if self._messages >= self._max_messages:
            self._wake.set()
        return group

    def _cut_segment(self) -> None:
        if self._lines:
            self._segments.append(
                Segment(b"".join(self._lines), self._points, self._first_ts_ms, self._received_ms)
            )
            self._lines, self._points = [], 0

    def submit_dead(self, dead: DeadLetter) -> asyncio.Future[None]:
        self._dead.append(dead)
        self._messages += 1
        return self._current_group()

    def touch(self) -> asyncio.Future[None]:
        """A group with no rows (a status or health update): durable once the registry is saved."""
        return self._current_group()

    async def _loop(self) -> None:
        while True:
            if self._group is None:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            if self._messages < self._max_messages and not self._closing:
                # Let the group fill for a moment; a full group wakes us early.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval_s)
            if not self._queue.has_room() and not await self._wait_for_room():
                self._abandon_group()
                return
            await self._commit_group()

    async def _wait_for_room(self) -> bool:
        """Wait until the queue has room (True) or we are closing (False)."""
        self._metrics.queue_full.set(1)
        log.warning("queue full: holding acknowledgements", bytes=self._queue.depth_bytes)
        while not self._queue.has_room():
            if self._closing:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.wait_for_room(), 0.5)
        self._metrics.queue_full.set(0)
        return True

    def _abandon_group(self) -> None:
        """Shutting down with a full queue: leave the group unacknowledged; the broker redelivers."""
        if self._group is not None and not self._group.done():
            self._group.set_exception(ConnectionAbortedError("shutting down with a full queue"))
            self._group.exception()  # mark retrieved: waiters that are gone must not warn
        self._group, self._segments, self._lines, self._points, self._dead = None, [], [], 0, []
        self._messages = 0

    async def _commit_group(self) -> None:
        self._cut_segment()
        group = self._group
        try:
            await self._commit_taken_group()
        except BaseException as exc:
            # Never leave a group unresolved: its messages would stay unacknowledged on a live
            # connection for ever. Failed, the subscriber reconnects and the broker redelivers.
            if group is not None and not group.done():
                group.set_exception(exc if isinstance(exc, Exception) else ConnectionAbortedError(str(exc)))
                group.exception()  # retrieved: the subscriber's callback reads it
            raise

    async def _commit_taken_group(self) -> None:
        group, segments, dead, messages = self._group, self._segments, self._dead, self._messages
        self._group, self._segments, self._dead, self._messages = None, [], [], 0
        sensors: list[tuple[str, str, dict[str, Any]]] = [
            (r.factory_id, r.sensor_id, r.as_dict()) for r in self._registry.take_dirty()
        ]
        fields = self._registry.take_dirty_fields()
        started = time.monotonic()
        while True:
            try:
                await self._queue.commit(segments, dead, sensors, fields)
                break
            except Exception as exc:
                # A full disk or an I/O error: nothing is acknowledged until it is written.
                self._storage_failed(exc, messages)
                await asyncio.sleep(1.0)
        if self.storage_error is not None:
            log.warning(
                "data dir writable again; group commits resumed",
                after_s=round(time.monotonic() - self._failing_since, 1),
                path=str(self._queue.path),
            )
            self.storage_error = None
            self._metrics.storage_error.set(0)
        self._metrics.commit_messages.observe(messages)
        self._metrics.readings_accepted.inc(sum(seg.points for seg in segments))
        for d in dead:
            self._metrics.messages_rejected.labels(d.reason).inc()
        self._metrics.queue_points.set(self._queue.depth_points)
        self._metrics.queue_bytes.set(self._queue.depth_bytes)
        self._metrics.dead_letters_held.set(self._queue.dead_total)
        self._metrics.dead_letters_evicted.set(self._queue.dead_evicted)
        if group is not None and not group.done():
            group.set_result(None)
        self.committed.set()
        if time.monotonic() - started > 1.0:
            log.warning("slow group commit", seconds=round(time.monotonic() - started, 3))

    def _storage_failed(self, exc: Exception, messages: int) -> None:
        """Say once that the data dir refuses writes (readiness and a metric say it meanwhile)."""
        message = f"{type(exc).__name__}: {exc}"[:300]
        if self.storage_error is None:
            self._failing_since = time.monotonic()
            self._metrics.storage_error.set(1)
            log.error(
                "group commit failed: the data dir refuses writes; holding acknowledgements and "
                "retrying every second (free space in it, or fix the error)",
                path=str(self._queue.path),
                error=message,
                messages=messages,
            )
        self.storage_error = message

    async def close(self) -> None:
        """Commit what is pending and stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
