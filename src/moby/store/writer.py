"""The InfluxDB writer: durable queue → batched ``/write`` calls → rows removed on confirmation.

* A batch is cut when a write slot is free and ``batch_min_points`` are waiting (so under
  steady load points do not sit out the linger: at 10,000 points/s, 1,000 wait 0.1 s), or when
  the oldest unsent row has waited ``batch_linger_s``; it holds up to ``batch_max_points``, and
  up to ``write_concurrency`` batches are in flight at once. Under heavy load the slots are
  busy, so batches grow to the maximum by themselves.
* Connection errors, timeouts, 5xx and 429 are retried with exponential backoff and jitter,
  for ever: data is never dropped because the database is away.
* A 400 means some points are bad. InfluxDB 1.x stores the good ones of a partial write, and
  writing a point again is harmless (same series and time = same point), so the batch is
  bisected until each bad line stands alone; those go to the dead-letter store with
  InfluxDB's message, the rest are confirmed.
* Rows leave the queue only when InfluxDB confirmed them (or they were dead-lettered).
* While InfluxDB is away the log gets one line when it goes, a summary every 30 s and one line
  when it is back (:class:`moby.outage.Outage`), not a line per retry of every slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from moby.ingest.process import Reason
from moby.ingest.queue import DeadLetter, DurableQueue, StoredSegment
from moby.metrics import Metrics
from moby.net import Backoff
from moby.outage import Outage
from moby.store.influx import (
    DatabaseNotFound,
    InfluxClient,
    InfluxError,
    RejectedError,
    RetryableError,
)

log = structlog.get_logger(__name__)


def topic_of(line: bytes) -> str:
    """The telemetry topic a point came from, read back from its factory_id/sensor_id tags."""
    key = line.split(b" ", 1)[0].decode("utf-8", "replace")
    tags = dict(part.split("=", 1) for part in key.split(",")[1:] if "=" in part)
    return f"moby/{tags.get('factory_id', '?')}/{tags.get('sensor_id', '?')}/telemetry"


class Writer:
    def __init__(
        self,
        queue: DurableQueue,
        client: InfluxClient,
        metrics: Metrics,
        *,
        new_data: asyncio.Event,
        batch_max_points: int = 5000,
        batch_min_points: int = 1000,
        batch_linger_s: float = 1.0,
        concurrency: int = 4,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 30.0,
        on_missing_database: Callable[[], Awaitable[None]] | None = None,
        outage: Outage | None = None,
    ) -> None:
        self._queue = queue
        self._client = client
        self._metrics = metrics
        self._new_data = new_data
        self._batch_max = batch_max_points
        self._batch_min = min(batch_min_points, batch_max_points)
        self._linger = batch_linger_s
        self._slots = asyncio.Semaphore(concurrency)
        self._retry = (retry_initial_s, retry_max_s)
        self._on_missing_database = on_missing_database
        self._cursor = 0  # highest queue id handed to a batch
        self._inflight_points = 0
        self._inflight: set[asyncio.Task[None]] = set()
        self._unsent_since: float | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.healthy = True  # False while writes fail
        # Shared with whoever else watches this InfluxDB (the bootstrap loop): one story in the log.
        self.outage = outage or Outage(
            "InfluxDB", client.url, logger=log, details=lambda: {"points_waiting": queue.depth_points}
        )

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._loop(), name="influx-writer")
        return self._task

    @property
    def unsent_points(self) -> int:
        return self._queue.depth_points - self._inflight_points

    # -- batching ---------------------------------------------------------------------------------
    async def _wait_for_batch(self) -> None:
        """Return when a batch should be cut: full, lingered long enough, or flushing."""
        while True:
            unsent = self.unsent_points
            if unsent <= 0:
                self._unsent_since = None
                if self._stopping:
                    return
                self._new_data.clear()
                try:
                    await asyncio.wait_for(self._new_data.wait(), 1.0)
                except TimeoutError:
                    # Ingest is idle, so no commit will carry the confirmed rows' deletes.
                    if self._queue.has_pending_deletes:
                        await self._queue.flush()
                continue
            now = time.monotonic()
            if self._unsent_since is None:
                self._unsent_since = now
            waited = now - self._unsent_since
            if unsent >= self._batch_min or waited >= self._linger or self._stopping:
                return
            self._new_data.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_data.wait(), self._linger - waited)

    async def _loop(self) -> None:
        while True:
            await self._slots.acquire()
            await self._wait_for_batch()
            if self._stopping and self.unsent_points <= 0:
                self._slots.release()
                return
            rows = await self._queue.read(self._cursor, self._batch_max)
            if not rows:
                self._slots.release()
                # Depth says there is data but we read none: resync the cursor (e.g. restart).
                await asyncio.sleep(0.05)
                continue
            self._cursor = rows[-1].id
            points = sum(r.points for r in rows)
            self._inflight_points += points
            self._unsent_since = time.monotonic() if self.unsent_points > 0 else None
            task = asyncio.create_task(self._deliver(rows, points))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver(self, rows: Sequence[StoredSegment], points: int) -> None:
        try:
            body = b"".join(r.lines for r in rows)
            if await self._write_with_retry(body) is not None:
                await self._isolate(rows)
            self._queue.remove(rows)
            self._metrics.batch_points.observe(points)
            now = time.time()
            for row in rows:
                self._metrics.e2e_lag.observe(max(0.0, now - row.received_ms / 1000))
                self._metrics.reading_age.observe(max(0.0, now - row.first_ts_ms / 1000))
            self._metrics.queue_points.set(self._queue.depth_points)
            self._metrics.queue_bytes.set(self._queue.depth_bytes)
        finally:
            self._inflight_points -= points
            self._slots.release()

    async def _write_with_retry(self, body: bytes) -> str | None:
        """None once InfluxDB stored it all; its message if it rejected some points (a 400)."""
        backoff = Backoff(*self._retry)
        while True:
            started = time.monotonic()
            try:
                await self._client.write(body)
            except RejectedError as exc:
                self.outage.succeeded()  # it answered: bad points, not an unavailable database
                self._metrics.write_errors.labels("rejected").inc()
                log.info("InfluxDB rejected points", error=str(exc)[:300])
                return str(exc)
            except InfluxError as exc:  # retryable, or a configuration problem: both wait and retry
                kind = "retryable" if isinstance(exc, RetryableError) else "config"
                self._metrics.write_errors.labels(kind).inc()
                self._metrics.influx_up.set(0)
                self.healthy = False
                if isinstance(exc, DatabaseNotFound) and self._on_missing_database is not None:
                    with contextlib.suppress(Exception):
                        await self._on_missing_database()
                self.outage.failed(exc, reason=kind, started=started)
                await asyncio.sleep(backoff.next())
                continue
            self._metrics.write_latency.observe(time.monotonic() - started)
            self._metrics.points_written.inc(body.count(b"\n"))
            self._metrics.influx_up.set(1)
            self.healthy = True
            self.outage.succeeded()
            return None

    async def _isolate(self, rows: Sequence[StoredSegment]) -> None:
        """Bisect a rejected batch: good halves are written, each bad line is dead-lettered."""
        lines = [line for row in rows for line in row.lines.split(b"\n") if line]
        dead: list[DeadLetter] = []
        pending = [lines]
        while pending:
            part = pending.pop()
            error = await self._write_with_retry(b"\n".join(part) + b"\n")
            if error is None:
                continue
            if len(part) == 1:
                line = part[0]
                dead.append(DeadLetter(topic_of(line), Reason.WRITE.value, error[:1000], line, time.time()))
                continue
            middle = len(part) // 2
            pending.extend((part[middle:], part[:middle]))
        if dead:
            await self._queue.add_dead_letters(dead)
            self._metrics.messages_rejected.labels(Reason.WRITE.value).inc(len(dead))
            log.warning("points dead-lettered by InfluxDB", count=len(dead))

    async def stop(self, timeout_s: float = 10.0) -> bool:
        """Flush what is queued (if InfluxDB takes it within the timeout); True if all went."""
        self._stopping = True
        self._new_data.set()
        try:
            if self._task is not None:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            if self._inflight:
                await asyncio.wait_for(asyncio.gather(*self._inflight), timeout_s)
            return self._queue.depth_points == 0
        except TimeoutError:
            return False
        finally:
            for task in (self._task, *self._inflight):
                if task is not None and not task.done():
                    task.cancel()
