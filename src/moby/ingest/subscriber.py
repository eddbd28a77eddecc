"""The MQTT side of ingest: a persistent, shared, flow-controlled QoS 1 subscription.

* Persistent session (fixed client id, clean start off, session expiry): while the backend
  restarts, the broker keeps what arrives for it.
* MQTT v5 shared subscription ``$share/<group>/moby/+/+/<kind>``: several backends split the
  stream instead of each taking all of it.
* Acknowledge after durability: gmqtt runs with ``optimistic_acknowledgement=False`` and awaits
  :meth:`Subscriber._on_message`, which returns only when the message's queue row or dead letter
  is committed. The client's *receive maximum* caps unacknowledged messages in flight, which is
  what bounds memory when the queue is full and acknowledgements stop.
* Reconnects with exponential backoff and jitter, for ever.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from gmqtt import Client, Subscription
from gmqtt.mqtt.constants import MQTTv50

from moby.config import Settings
from moby.ingest.committer import GroupCommitter
from moby.ingest.process import Accepted, Processor, Rejected
from moby.ingest.queue import DeadLetter
from moby.metrics import Metrics
from moby.net import Backoff, MqttEndpoint, tls_context
from moby.schema import TopicKind, subscription

log = structlog.get_logger(__name__)

INGESTED_KINDS = (TopicKind.TELEMETRY, TopicKind.STATUS, TopicKind.HEALTH)
_SUCCESS = 0  # PUBACK reason code; on failure we raise instead, so no PUBACK is sent at all
_KINDS = frozenset(k.value for k in TopicKind)


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
        self._client: Client | None = None
        self._backoff = Backoff(0.5, settings.mqtt_reconnect_max_s)
        self.connected = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_loop(), name="mqtt-connect")

    def _make_client(self) -> Client:
        s = self._settings
        client = Client(
            s.mqtt_client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=s.mqtt_session_expiry_s,
            receive_maximum=s.mqtt_receive_maximum,
        )
        client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        if self._endpoint.username:
            client.set_auth_credentials(self._endpoint.username, self._endpoint.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    async def _connect_loop(self) -> None:
        """First connection (gmqtt itself reconnects after that, with our backoff as its delay)."""
        ssl_ctx: Any = False
        if self._endpoint.tls:
            s = self._settings
            ssl_ctx = tls_context(s.mqtt_ca_file, s.mqtt_cert_file, s.mqtt_key_file)
        while not self._stopping:
            client = self._make_client()
            try:
                await client.connect(
                    self._endpoint.host,
                    self._endpoint.port,
                    ssl=ssl_ctx,
                    keepalive=self._settings.mqtt_keepalive_s,
                    version=MQTTv50,
                )
            except Exception as exc:
                delay = self._backoff.next()
                log.warning(
                    "broker unreachable",
                    error=str(exc) or type(exc).__name__,
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
                continue
            self._client = client
            return

    def _on_connect(self, client: Client, flags: int, rc: int, properties: Any) -> None:
        self._backoff.reset()
        group = self._settings.mqtt_share_group or None
        client.subscribe(
            [Subscription(subscription(kind, group), qos=1) for kind in INGESTED_KINDS],
            subscription_identifier=1,
        )
        if self.connected.is_set():
            self._metrics.mqtt_reconnects.inc()
        self.connected.set()
        self._metrics.mqtt_connected.set(1)
        log.info("connected to broker", session_present=bool(flags), share_group=group)

    def _on_disconnect(self, client: Client, packet: Any, exc: Any = None) -> None:
        self.connected.clear()
        self._metrics.mqtt_connected.set(0)
        if self._stopping:
            return
        delay = self._backoff.next()
        client.reconnect_delay = delay
        log.warning("lost the broker; reconnecting", retry_in=round(delay, 2))

    async def stop(self) -> None:
        """Disconnect without unsubscribing: the session (and its backlog) stays on the broker."""
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.disconnect(), 5)
            except Exception as exc:
                log.info("disconnect was not clean", error=str(exc))
        self.connected.clear()
        self._metrics.mqtt_connected.set(0)

    # -- the hot path ---------------------------------------------------------------------------
    async def _on_message(self, client: Client, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        kind = topic.rsplit("/", 1)[-1]
        self._metrics.messages_received.labels(kind if kind in _KINDS else "other").inc()
        outcome = self._processor.process(topic, payload)
        if isinstance(outcome, Accepted):
            await self._committer.submit(outcome.lines, outcome.points, outcome.first_ts_ms)
        elif isinstance(outcome, Rejected):
            await self._committer.submit_dead(
                DeadLetter(topic, outcome.reason.value, outcome.detail, payload, time.time())
            )
        else:
            await self._committer.touch()
        return _SUCCESS
