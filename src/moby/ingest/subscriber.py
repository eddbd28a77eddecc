"""The MQTT side of ingest: a persistent, shared, flow-controlled QoS 1 subscription.

* Persistent session (fixed client id, clean start off, session expiry): while the backend
  restarts, the broker keeps what arrives for it.
* With a share group configured, MQTT v5 shared subscriptions ``$share/<group>/moby/+/+/telemetry``
  and ``.../health``: several backends split the stream instead of each taking all of it.
  ``status`` (retained birth/death, low volume) is always subscribed *unshared*, so every
  backend knows every sensor's metadata and can enrich whichever telemetry it is handed.
* Acknowledge after durability, in batches: each message joins the committer's current group;
  when that group is on disk, the PUBACKs of all its messages leave in one socket write. The
  client's *receive maximum* caps unacknowledged messages in flight, which bounds memory when
  the queue is full and acknowledgements stop.
* Reconnects with exponential backoff and jitter, for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from functools import partial

import structlog

from moby.config import Settings
from moby.ingest.committer import GroupCommitter
from moby.ingest.process import Accepted, Processor, Rejected
from moby.ingest.queue import DeadLetter
from moby.metrics import Metrics
from moby.mqtt import MqttConnection, SessionOptions, keepalive, open_connection, subscribe
from moby.net import Backoff, MqttEndpoint, tls_context
from moby.schema import TopicKind, subscription

log = structlog.get_logger(__name__)

_KINDS = frozenset(k.value for k in TopicKind)
INTERNAL_ERROR = "internal_error"


def subscriptions(share_group: str | None) -> list[str]:
    return [
        subscription(TopicKind.TELEMETRY, share_group),
        subscription(TopicKind.HEALTH, share_group),
        subscription(TopicKind.STATUS),
    ]


class Subscriber:
    def __init__(
        self,
        settings: Settings,
        processor: Processor,
        committer: GroupCommitter,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._processor = processor
        self._committer = committer
        self._metrics = metrics
        self._endpoint = MqttEndpoint.parse(settings.mqtt_url)
        self._options = SessionOptions(
            client_id=settings.mqtt_client_id,
            username=self._endpoint.username,
            password=self._endpoint.password,
            keepalive_s=settings.mqtt_keepalive_s,
            session_expiry_s=settings.mqtt_session_expiry_s,
            receive_maximum=settings.mqtt_receive_maximum,
        )
        self._backoff = Backoff(0.5, settings.mqtt_reconnect_max_s)
        self._conn: MqttConnection | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._received = {k: metrics.messages_received.labels(k) for k in (*_KINDS, "other")}
        # counted here, added to the Prometheus counters once per commit group (a counter's
        # inc() takes a lock: too dear per message)
        self._counts = dict.fromkeys(self._received, 0)
        self._acks: _AckBatch | None = None
        # Our own bound on unacknowledged messages held in memory. The broker should stop at
        # our receive maximum, but Mosquitto 2.0.11 was measured sending >12,000 past a
        # receive maximum of 100 while acknowledgements flowed in batches; so when either
        # bound is passed we stop reading the socket (TCP backpressure) until commits catch up.
        self._max_unacked = settings.mqtt_receive_maximum
        self._max_unacked_bytes = settings.mqtt_max_unacked_bytes
        self._unacked = 0
        self._unacked_bytes = 0
        self._paused: MqttConnection | None = None
        self.connected = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt")

    async def _run(self) -> None:
        s = self._settings
        ssl_ctx = (
            tls_context(s.mqtt_ca_file, s.mqtt_cert_file, s.mqtt_key_file) if self._endpoint.tls else None
        )
        filters = subscriptions(s.mqtt_share_group or None)
        first = True
        while not self._stopping:
            try:
                conn, session_present = await open_connection(
                    self._endpoint.host,
                    self._endpoint.port,
                    self._options,
                    self._on_publish,
                    ssl_context=ssl_ctx,
                )
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                await self._pause("broker unreachable", exc)
                continue
            try:
                await subscribe(conn, filters)
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                conn.abort()
                await self._pause("subscribe failed", exc)
                continue
            self._conn = conn
            self._backoff.reset()
            if not first:
                self._metrics.mqtt_reconnects.inc()
            first = False
            self.connected.set()
            self._metrics.mqtt_connected.set(1)
            log.info("connected to broker", session_present=session_present, subscriptions=filters)
            pinger = asyncio.create_task(keepalive(conn, self._options.keepalive_s))
            reason = await conn.closed
            pinger.cancel()
            self.connected.clear()
            self._metrics.mqtt_connected.set(0)
            if not self._stopping:
                await self._pause("lost the broker", reason)

    async def _pause(self, what: str, exc: BaseException | None) -> None:
        delay = self._backoff.next()
        log.warning(what, error=(str(exc) or type(exc).__name__) if exc else None, retry_in=round(delay, 2))
        await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Disconnect without unsubscribing: the session (and its backlog) stays on the broker."""
        self._stopping = True
        if self._conn is not None:
            await self._conn.disconnect()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.connected.clear()
        self._metrics.mqtt_connected.set(0)

    # -- the hot path ---------------------------------------------------------------------------
    def _on_publish(self, conn: MqttConnection, topic: str, payload: bytes, qos: int, mid: int) -> None:
        group = self._ingest(topic, payload)
        if qos == 0:
            return
        batch = self._acks
        if batch is None or batch.group is not group or batch.conn is not conn:
            batch = self._acks = _AckBatch(group, conn)
            group.add_done_callback(partial(self._group_done, batch))
        size = len(payload) + len(topic)
        batch.mids.append(mid)
        batch.size += size
        self._unacked += 1
        self._unacked_bytes += size
        if self._paused is None and (
            self._unacked >= self._max_unacked or self._unacked_bytes >= self._max_unacked_bytes
        ):
            conn.pause_reading()
            self._paused = conn

    def _group_done(self, batch: _AckBatch, group: asyncio.Future[None]) -> None:
        """PUBACK a committed group's messages on the connection they arrived on.

        If the group failed, or that connection is gone, nothing is sent: the broker redelivers
        unacknowledged messages when the session resumes.
        """
        if not group.cancelled() and group.exception() is None:
            batch.conn.ack(batch.mids)
        self.flush_counts()
        self._unacked -= len(batch.mids)
        self._unacked_bytes -= batch.size
        paused = self._paused
        if paused is not None and (
            self._unacked <= self._max_unacked // 2 and self._unacked_bytes <= self._max_unacked_bytes // 2
        ):
            self._paused = None
            paused.resume_reading()

    def flush_counts(self) -> None:
        for kind, count in self._counts.items():
            if count:
                self._received[kind].inc(count)
                self._counts[kind] = 0

    def _ingest(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Process one message; the future resolves when its outcome is durable."""
        kind = topic.rsplit("/", 1)[-1]
        if kind in self._counts:
            self._counts[kind] += 1
        else:
            self._counts["other"] += 1
        try:
            outcome = self._processor.process(topic, payload)
        except Exception as exc:  # a bug must not turn one message into a redelivery loop
            log.exception("processing failed; dead-lettering the message", topic=topic[:200])
            return self._committer.submit_dead(
                DeadLetter(topic, INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:1000], payload, time.time())
            )
        if isinstance(outcome, Accepted):
            return self._committer.submit(outcome.lines, outcome.points, outcome.first_ts_ms)
        if isinstance(outcome, Rejected):
            dead = DeadLetter(topic, outcome.reason.value, outcome.detail, payload, time.time())
            return self._committer.submit_dead(dead)
        return self._committer.touch()


@dataclass(eq=False)
class _AckBatch:
    """The QoS 1 messages of one commit group that arrived on one connection."""

    group: asyncio.Future[None]
    conn: MqttConnection
    mids: list[int] = field(default_factory=list)
    size: int = 0
