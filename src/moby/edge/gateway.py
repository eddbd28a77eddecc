"""One shared MQTT connection of ``moby simulate``: a *gateway* carrying a slice of the fleet.

Births on connect (the gateway's own, with the Last Will on its status topic, then its sensors'),
then rounds until the link drops: every sensor's new (live) readings, one message per sensor,
plus a rate-limited share of the backlog in storage order; the round's PUBACKs awaited (within
the broker's receive maximum) and its rows deleted from the buffer in one statement. A message
the broker refuses (PUBACK >= 0x80) keeps its rows in the buffer and is offered again after a
backoff. The connection is :class:`moby.mqtt.MqttSession`'s (reconnects with backoff for ever).
See :mod:`moby.edge.simulate` for the whole design.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

import structlog

from moby import __version__
from moby.edge.buffer import BATCH_BODY_BUDGET, BufferedReading
from moby.edge.fleet import VirtualSensor
from moby.edge.messages import WILL_PAYLOAD, birth_payload, offline_payload
from moby.mqtt import MqttConnection, MqttSession, PublishRefused, SessionOptions, SessionPlan
from moby.mqtt.errors import hint
from moby.net import Backoff, MqttEndpoint, connection_identity
from moby.schema import MAX_READINGS, Topic, TopicKind

if TYPE_CHECKING:
    from moby.edge.simulate import Simulator

log = structlog.get_logger(__name__)

REPLAY_ROUND = 8 * MAX_READINGS  # backlog readings sent per round and connection, at most
Message = tuple[str, bytes, list[int]]  # topic, payload, the buffer rows it carries


def chunks(rows: list[BufferedReading]) -> Iterable[list[BufferedReading]]:
    """Cut one sensor's rows into runs that each fit one message."""
    run: list[BufferedReading] = []
    size = 0
    for row in rows:
        if run and (len(run) == MAX_READINGS or size + len(row.body) > BATCH_BODY_BUDGET):
            yield run
            run, size = [], 0
        run.append(row)
        size += len(row.body)
    if run:
        yield run


class Gateway:
    """One MQTT connection carrying the readings of a slice of the fleet."""

    def __init__(self, sim: Simulator, index: int, sensors: list[VirtualSensor]) -> None:
        self.sim = sim
        self.index = index
        self.gateway_id = f"sim-gw-{index:02d}"
        self.client_id = f"moby-sim-{sim.cfg.factory_id}-gw{index:02d}"
        self.sensors = sensors
        self.by_key = {s.key: s for s in sensors}
        self.status_topic = str(Topic(sim.cfg.factory_id, self.gateway_id, TopicKind.STATUS))
        self.live: deque[BufferedReading] | None = None  # None: not accepting live rows
        self.wake = asyncio.Event()
        self.started = time.time()
        self.retry: list[Message] = []  # messages the broker refused, offered again after a backoff
        self._retry_at = 0.0
        self._refusals = Backoff(0.5, sim.cfg.reconnect_max_s)
        self._refused_code: int | None = None

        def options(endpoint: MqttEndpoint) -> SessionOptions:
            # With a user, each connection is an identity of its own (the broker makes the
            # username the client id, so connections sharing one would take each other's place).
            user = connection_identity(endpoint.username, self.index) if endpoint.username else None
            return SessionOptions(
                client_id=user or self.client_id,
                username=user,
                password=endpoint.password,
                clean_start=True,  # the buffer holds what is unsent
                session_expiry_s=0,
                will=(self.status_topic, WILL_PAYLOAD, 1, True),
            )

        self.session = MqttSession(
            SessionPlan(
                brokers=[MqttEndpoint.parse(url) for url in sim.cfg.brokers],
                options=options,
                ssl_context=sim.cfg.ssl_context,
                reconnect_max_s=sim.cfg.reconnect_max_s,
                client=f"gateway {self.gateway_id}",
                source="MOBY_MQTT_URL",
            ),
            _ignore,
            self._serve_session,
            gate=lambda: sim.network_up.wait(),  # (the simulator makes the event after its gateways)
        )

    @property
    def conn(self) -> MqttConnection | None:
        return self.session.conn

    @property
    def reconnects(self) -> int:
        return self.session.reconnects

    async def run_forever(self) -> None:
        """Until the simulator closes; the connection is then left open for :meth:`say_offline`."""
        await self.session.run()

    async def _serve_session(self, conn: MqttConnection, session_present: bool) -> None:
        sim = self.sim
        if not sim.network_up.is_set():  # cut while we connected
            conn.abort(ConnectionError("network cut (simulated)"))
            return
        if sim.closing:
            return
        try:
            await self._serve(conn)
        finally:
            self.live = None
            self.retry = []  # their rows are backlog for the next connection

    async def _publish_all(self, conn: MqttConnection, messages: list[tuple[str, bytes, bool]]) -> None:
        window = max(1, conn.receive_maximum)
        for i in range(0, len(messages), window):
            futures = [
                conn.publish(t, p, qos=TopicKind.STATUS.qos, retain=r) for t, p, r in messages[i : i + window]
            ]
            for result in await asyncio.gather(*futures, return_exceptions=True):
                if isinstance(result, PublishRefused):
                    self._refused(result)  # logged; statuses go again with the next connection
                elif isinstance(result, BaseException):
                    raise result

    async def _serve(self, conn: MqttConnection) -> None:
        sim, buffer, loop = self.sim, self.sim.buffer, asyncio.get_running_loop()
        gateway_birth = birth_payload(
            sensor_type=None, units={}, model="moby-simulate", firmware=__version__, gateway=True,
            sensors=len(self.sensors),
        )  # fmt: skip
        births = [(s.topics[TopicKind.STATUS], sim.birth(s), True) for s in self.sensors]
        await self._publish_all(conn, [(self.status_topic, gateway_birth, True), *births])
        # From here on, rows the sampler stores are live; all older ones of our sensors are backlog.
        boundary = sim.dispatched
        self.live = deque()
        self._retry_at = 0.0
        backlog = any(k in self.by_key for k in buffer.sensors_with_backlog())
        replayed_to = 0
        budget, budget_at = 0.0, time.monotonic()
        next_health = time.monotonic() + random.uniform(0, sim.cfg.health_every_s)
        while conn.open and not sim.closing:
            now = time.monotonic()
            if now >= next_health:
                for s in self.sensors:
                    conn.publish(s.topics[TopicKind.HEALTH], sim.health(s, self), qos=TopicKind.HEALTH.qos)
                next_health = now + sim.cfg.health_every_s
            if self.retry and now < self._retry_at:
                # Refused messages go first, once their backoff has passed: nothing overtakes them.
                await asyncio.wait({conn.closed}, timeout=min(self._retry_at - now, 1.0))
                continue
            live, self.live = self.live, deque()
            messages, self.retry = self.retry + self._messages(live), []
            if sim.draining:  # no replay limit (inf * an elapsed 0.0 would be nan, and stop it)
                budget = float(REPLAY_ROUND)
            else:
                budget = min(budget + (now - budget_at) * sim.cfg.replay_rate, float(REPLAY_ROUND))
            budget_at = now
            if backlog and budget >= 1:
                # The backlog in storage order (each sensor's oldest first), cheap to delete.
                limit = int(budget)
                rows = await loop.run_in_executor(
                    None,
                    partial(
                        buffer.oldest, limit, after_id=replayed_to, until_id=boundary, sensor_keys=self.by_key
                    ),
                )
                backlog = len(rows) == limit
                if rows:
                    replayed_to = rows[-1].id
                    budget -= len(rows)
                    messages += self._messages(rows)
            if not messages:
                self.wake.clear()
                if self.live:  # rows came in while we read the backlog: no wake-up is coming for them
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 1.0 if not backlog else 0.05)
                continue
            await self._send(conn, messages)

    def _messages(self, rows: Iterable[BufferedReading]) -> list[Message]:
        """One message per sensor (a batch if it has several rows, more past 1,000), in row order."""
        per_sensor: dict[str, list[BufferedReading]] = {}
        for row in rows:
            per_sensor.setdefault(row.sensor_key, []).append(row)
        messages = []
        for key, runs in per_sensor.items():
            sensor = self.by_key[key]
            for run in chunks(runs):
                messages.append(
                    (sensor.topics[TopicKind.TELEMETRY], self.sim.payload(sensor, run), [r.id for r in run])
                )
        return messages

    async def _send(self, conn: MqttConnection, messages: list[Message]) -> None:
        window = max(1, conn.receive_maximum)
        acked: list[int] = []
        lost: BaseException | None = None
        refused: PublishRefused | None = None
        for i in range(0, len(messages), window):
            part = messages[i : i + window]
            results = await asyncio.gather(
                *(conn.publish(t, p, qos=TopicKind.TELEMETRY.qos) for t, p, _ in part), return_exceptions=True
            )
            for message, result in zip(part, results, strict=True):
                if result is None:
                    acked.extend(message[2])
                elif isinstance(result, PublishRefused):  # kept in the buffer, offered again later
                    self.sim.refused_by_broker += len(message[2])
                    self.retry.append(message)
                    refused = result
                else:
                    lost = result
            if lost is not None:
                break
        if acked:
            await asyncio.get_running_loop().run_in_executor(None, self.sim.buffer.ack, acked)
        if refused is not None:
            self._retry_at = time.monotonic() + self._refused(refused)
        elif acked and self._refused_code is not None:
            log.info("the broker accepts the gateway's messages again", gateway=self.gateway_id)
            self._refused_code = None
            self._refusals.reset()
        if lost is not None:
            raise ConnectionError(str(lost) or type(lost).__name__)

    def _refused(self, exc: PublishRefused) -> float:
        """Log a new kind of refusal once; the delay before the refused messages are offered again."""
        if self._refused_code != exc.code:
            self._refused_code = exc.code
            endpoint = self.session.endpoint
            log.error(
                "the broker refused messages; their readings stay in the buffer and are offered again",
                gateway=self.gateway_id,
                topic=exc.topic,
                code=f"0x{exc.code:02X}",
                reason=exc.reason,
                hint=hint(exc, user=endpoint.username if endpoint else None, source=self.session.plan.source),
            )
        return self._refusals.next()

    async def say_offline(self) -> bool:
        """Offline statuses for the gateway and its sensors, then a normal DISCONNECT."""
        conn = self.conn
        if conn is None or not conn.open:
            return False
        offline = offline_payload()
        messages = [(s.topics[TopicKind.STATUS], offline, True) for s in self.sensors]
        try:
            await asyncio.wait_for(
                self._publish_all(conn, [*messages, (self.status_topic, offline, True)]), 10
            )
        except (ConnectionError, TimeoutError):  # MqttError is a ConnectionError
            return False
        finally:
            await conn.disconnect()
        return True


def _ignore(conn: MqttConnection, topic: str, payload: bytes, qos: int, mid: int) -> None:
    """The simulator subscribes to nothing."""
