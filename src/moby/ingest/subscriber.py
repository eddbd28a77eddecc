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
  the queue is full and acknowledgements stop. If a group fails, the connection is dropped so
  the broker redelivers its messages (it resends unacknowledged messages only on a new connection).
* A message over the *Maximum Packet Size* announced in CONNECT, from a broker that ignores it,
  is read past (never held whole), dead-lettered ``too_large`` with its topic and the first bytes
  of its payload, and acknowledged: never a reconnect loop over one message.
* The connection is :class:`moby.mqtt.MqttSession`'s: reconnects with backoff and jitter for
  ever, refusals (wrong password, ACL) logged once per state change with a hint.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import partial

import structlog

from moby.config import Settings
from moby.ingest.committer import GroupCommitter
from moby.ingest.process import Accepted, Processor, Reason, Rejected
from moby.ingest.queue import DeadLetter
from moby.metrics import Metrics
from moby.mqtt import MqttConnection, MqttSession, Oversized, SessionOptions, SessionPlan
from moby.net import MqttEndpoint, tls_context
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
        endpoint = MqttEndpoint.parse(settings.mqtt_url)
        self._options = SessionOptions(
            client_id=settings.mqtt_client_id,
            username=endpoint.username,
            password=endpoint.password,
            keepalive_s=settings.mqtt_keepalive_s,
            session_expiry_s=settings.mqtt_session_expiry_s,
            receive_maximum=settings.mqtt_receive_maximum,
        )
        s = settings
        self.session = MqttSession(
            SessionPlan(
                brokers=[endpoint],
                options=lambda _: self._options,
                subscriptions=subscriptions(s.mqtt_share_group or None),
                ssl_context=tls_context(s.mqtt_ca_file, s.mqtt_cert_file, s.mqtt_key_file)
                if endpoint.tls
                else None,
                reconnect_max_s=s.mqtt_reconnect_max_s,
                client="backend",
                source="MOBY_MQTT_URL",
            ),
            self._on_publish,
            self._serve,
            on_oversized=self._on_oversized,
            on_failure=lambda kind: metrics.mqtt_connect_failures.labels(kind).inc(),
        )
        self.connected = self.session.connected
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

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.session.run(), name="mqtt-subscriber")
        return self._task

    async def _serve(self, conn: MqttConnection, session_present: bool) -> None:
        """While connected: the handlers do the work; here only the gauges."""
        self._metrics.mqtt_connected.set(1)
        if self.session.reconnects:
            self._metrics.mqtt_reconnects.inc()
        try:
            await asyncio.wait({conn.closed})
        finally:
            self._metrics.mqtt_connected.set(0)

    async def stop(self) -> None:
        """Disconnect without unsubscribing: the session (and its backlog) stays on the broker."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
        if self.session.conn is not None:
            await self.session.conn.disconnect()
        self.connected.clear()
        self._metrics.mqtt_connected.set(0)

    # -- the hot path ---------------------------------------------------------------------------
    def _on_publish(self, conn: MqttConnection, topic: str, payload: bytes, qos: int, mid: int) -> None:
        group = self._ingest(topic, payload)
        if qos:
            self._hold(conn, group, mid, len(payload) + len(topic))

    def _on_oversized(self, conn: MqttConnection, message: Oversized) -> None:
        """A PUBLISH over our maximum packet size, read past: dead-lettered, then acknowledged."""
        self._count(message.topic)
        head = message.payload_head
        detail = (
            f"a PUBLISH of {message.size} bytes, over the backend's maximum packet size of "
            f"{conn.max_packet_bytes} bytes (announced to the broker, which sent it all the same); "
            f"read past without keeping it: the payload here is its first {len(head)} bytes"
        )
        group = self._committer.submit_dead(
            DeadLetter(message.topic, Reason.TOO_LARGE.value, detail, head, time.time())
        )
        if message.qos:
            self._hold(conn, group, message.packet_id, len(head) + len(message.topic))

    def _hold(self, conn: MqttConnection, group: asyncio.Future[None], mid: int, size: int) -> None:
        """Keep a QoS 1 message's packet id until its group is durable, then PUBACK it."""
        batch = self._acks
        if batch is None or batch.group is not group or batch.conn is not conn:
            batch = self._acks = _AckBatch(group, conn)
            group.add_done_callback(partial(self._group_done, batch))
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

        If that connection is gone, nothing is sent: the broker redelivers unacknowledged
        messages when the session resumes. If the group failed, the connection is dropped:
        a broker resends unacknowledged messages only on a new connection, so keeping this one
        would leave them (and their share of the receive maximum) stuck in flight.
        """
        failed = group.cancelled() or group.exception() is not None
        if not failed:
            batch.conn.ack(batch.mids)
        elif batch.conn.open and not self._stopping:
            error = "cancelled" if group.cancelled() else repr(group.exception())
            log.error("a commit group failed; reconnecting so the broker redelivers it", error=error)
            batch.conn.abort(ConnectionAbortedError("a commit group failed"))
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

    def _count(self, topic: str) -> None:
        kind = topic.rsplit("/", 1)[-1]
        if kind in self._counts:
            self._counts[kind] += 1
        else:
            self._counts["other"] += 1

    def _ingest(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Process one message; the future resolves when its outcome is durable."""
        self._count(topic)
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
