"""``moby edge``: the agent next to the machines — sample, buffer on disk, publish, report.

Each sensor gets a *link*: its own MQTT connection (client id ``moby-edge-<factory>-<sensor>``),
because the contract gives every sensor its own Last Will on its own ``status`` topic and the
broker's ACL lets a sensor publish only under its own topics.

* Sampling: every ``interval_s`` the driver is read and the reading appended to the on-device
  buffer (:class:`moby.edge.buffer.EdgeBuffer`, SQLite, fsync'd), which assigns ``seq``.
* Publishing: readings leave the buffer only after the broker's PUBACK. One message is in flight
  per stream, so each stream stays in order. Readings taken since the link came up (*live*) go
  first; readings from before (*backlog*, e.g. a network cut) are replayed oldest-first in batch
  messages of up to 1,000 readings, at most ``replay_rate`` readings/s, so live data is never
  starved behind a long backlog.
* Status: a retained birth on connect (metadata, units, interval), the Last Will ``{"online": false}``
  retained, and an explicit offline status on a clean stop. Health every ``health_every_s``.
* Commands: each link subscribes to its own ``cmd`` topic at QoS 2 (set_interval, birth, ping).
* Brokers: several URLs; a lost connection moves to the next one, with backoff and jitter, for
  ever (:class:`moby.mqtt.MqttSession`: a refused CONNECT or SUBSCRIBE is retried like an
  unreachable broker, logged once per state change with a hint).
* A message the broker refuses (PUBACK >= 0x80, e.g. 0x87 when the ACL denies the topic) does not
  end the link: its readings stay in the buffer, the refusal is counted in the health report's
  ``errors.puback_refused`` and logged once, and the same readings are offered again after a
  backoff (the reconnect backoff's steps), so the stream keeps its order and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import tomllib
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from moby.edge.buffer import DropPolicy, EdgeBuffer, batch_payload, sensor_key, single_payload
from moby.edge.devices.base import DeviceDriver, device_errors
from moby.edge.devices.config import SensorConfig, StartupBehavior, make_sensor_driver, relative_paths
from moby.edge.drivers import SensorDriver
from moby.edge.messages import (
    WILL_PAYLOAD,
    birth_payload,
    health_payload,
    offline_payload,
)
from moby.mqtt import MqttConnection, MqttSession, PublishRefused, SessionOptions, SessionPlan
from moby.mqtt.errors import hint
from moby.net import Backoff, MqttEndpoint, tls_context
from moby.schema import ID_PATTERN, MAX_READINGS, Topic, TopicKind
from moby.supervisor import Supervisor

log = structlog.get_logger(__name__)

Id = Annotated[str, Field(pattern=ID_PATTERN)]


class AgentConfig(BaseModel):
    """The agent's configuration file (TOML)."""

    model_config = ConfigDict(extra="forbid")

    factory_id: Id
    brokers: Annotated[list[str], Field(min_length=1)] = ["mqtt://127.0.0.1:1883"]
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    buffer_path: Path = Path("./var/edge-buffer.sqlite")
    buffer_max_bytes: Annotated[int, Field(ge=1024 * 1024)] = 256 * 1024 * 1024
    buffer_max_age_s: Annotated[int, Field(ge=60)] = 7 * 86400
    drop_policy: DropPolicy = DropPolicy.DROP_OLDEST
    replay_rate: Annotated[float, Field(gt=0)] = 5000.0  # backlog readings/s per sensor
    health_every_s: Annotated[float, Field(gt=0)] = 30.0
    reconnect_max_s: Annotated[float, Field(gt=0)] = 5.0  # backoff ceiling between broker attempts
    sensors: Annotated[list[SensorConfig], Field(min_length=1)]
    # a device unreachable at start: "error" stops with one line per device, "retry" starts anyway
    startup_error_behavior: StartupBehavior = "error"
    _source: str = PrivateAttr("the agent configuration")  # the file, for error lines

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        """Relative TLS file paths are taken from the configuration file's folder (a bundle)."""
        raw = tomllib.loads(path.read_text())
        sensors = raw.get("sensors")
        for table in (raw, *(sensors if isinstance(sensors, list) else [])):
            if not isinstance(table, dict):  # not a table: validation says so, naming the key
                continue
            for key in ("ca_file", "cert_file", "key_file"):
                if isinstance(table.get(key), str):
                    table[key] = str(path.parent / table[key])
            if table is not raw:
                relative_paths(table, path.parent)
        cfg = cls.model_validate(raw)
        cfg._source = str(path)
        return cfg

    @property
    def tls_needed(self) -> bool:
        return any(MqttEndpoint.parse(url).tls for url in self.brokers)


def make_driver(
    cfg: SensorConfig, index: int = 0, source: str = "the agent configuration"
) -> SensorDriver | DeviceDriver:
    """The sensor's driver: simulated, or a real device's (moby.edge.devices); ConfigError when
    the driver's library is not installed."""
    return make_sensor_driver(cfg, index, source)


class SensorLink:
    """One sensor: its driver, its sampling loop and its MQTT connection."""

    def __init__(self, agent: EdgeAgent, cfg: SensorConfig, driver: SensorDriver | DeviceDriver) -> None:
        self.agent = agent
        self.cfg = cfg
        self.driver = driver
        self.key = sensor_key(agent.cfg.factory_id, cfg.sensor_id)
        self.topics = {k: str(Topic(agent.cfg.factory_id, cfg.sensor_id, k)) for k in TopicKind}
        self.new_data = asyncio.Event()
        self.started = time.time()
        self.errors: dict[str, int] = {}
        self.ssl_context = agent.ssl_context
        if cfg.cert_file is not None and agent.cfg.tls_needed:
            self.ssl_context = tls_context(agent.cfg.ca_file, cfg.cert_file, cfg.key_file)
        self._logged_counters: dict[str, int] = {}
        client_id = f"moby-edge-{agent.cfg.factory_id}-{cfg.sensor_id}"
        status = TopicKind.STATUS
        will = (self.topics[status], WILL_PAYLOAD, status.qos, status.retain)

        def options(endpoint: MqttEndpoint) -> SessionOptions:
            return SessionOptions(
                client_id=client_id,
                username=endpoint.username,
                password=endpoint.password,
                clean_start=True,  # the buffer, not the broker session, holds what is unsent
                session_expiry_s=0,
                will=will,
            )

        self.session = MqttSession(
            SessionPlan(
                brokers=[MqttEndpoint.parse(url) for url in agent.cfg.brokers],
                options=options,
                subscriptions=[self.topics[TopicKind.CMD]],
                subscribe_qos=TopicKind.CMD.qos,
                ssl_context=self.ssl_context,
                reconnect_max_s=agent.cfg.reconnect_max_s,
                client=f"sensor {cfg.sensor_id}",
                source="the agent configuration's brokers",
            ),
            self._on_command,
            self._serve,
        )
        # Messages the broker refused: offered again after this backoff; logged once per change.
        self._refusals = Backoff(0.5, agent.cfg.reconnect_max_s)
        self._refused: dict[TopicKind, int] = {}  # channel -> reason code, while it is refused

    @property
    def conn(self) -> MqttConnection | None:
        return self.session.conn

    @property
    def reconnects(self) -> int:
        return self.session.reconnects

    # -- sampling ------------------------------------------------------------------------------
    async def sample_forever(self) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(self.driver, DeviceDriver):
            await self._sample_device(self.driver, loop)
            return
        next_at = time.monotonic()
        while True:
            try:
                values = await loop.run_in_executor(None, self.driver.read)
                ts_ms = int(time.time() * 1000)
                await loop.run_in_executor(None, self.agent.buffer.append, self.key, ts_ms, values)
                self.new_data.set()
            except Exception as exc:  # a failing sensor must not stop the others
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                log.warning("sensor read failed", sensor=self.cfg.sensor_id, error=str(exc))
            next_at += self.cfg.interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _sample_device(self, driver: DeviceDriver, loop: asyncio.AbstractEventLoop) -> None:
        """A real device: the driver takes readings on its own schedule, stamped at acquisition."""
        async for sample in driver.samples(lambda: self.cfg.interval_s):
            try:
                await loop.run_in_executor(
                    None, self.agent.buffer.append, self.key, sample.ts_ms, sample.values, sample.quality
                )
                self.new_data.set()
            except Exception as exc:  # a reading the buffer refused must not stop the sensor
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                log.warning("reading not buffered", sensor=self.cfg.sensor_id, error=str(exc))

    # -- publishing -----------------------------------------------------------------------------
    def _birth(self) -> bytes:
        return birth_payload(
            sensor_type=self.driver.sensor_type,
            units=self.driver.units,
            model=self.cfg.model,
            firmware=self.cfg.firmware,
            line_id=self.cfg.line_id,
            machine_id=self.cfg.machine_id,
            interval_s=self.cfg.interval_s,
        )

    def _health(self, **extra: Any) -> bytes:
        counters = self.agent.buffer.counters()
        grown = {
            k: v - self._logged_counters.get(k, 0)
            for k, v in counters.items()
            if v > self._logged_counters.get(k, 0)
        }
        if grown:  # drops go to the log as well as into every health report
            log.warning("buffer dropped readings since the last report", sensor=self.cfg.sensor_id, **grown)
            self._logged_counters = counters
        return health_payload(
            started=self.started,
            buffer_depth=self.agent.buffer.depth(self.key),
            errors={**self.errors, **device_errors(self.driver), **counters},
            firmware=self.cfg.firmware,
            reconnects=self.reconnects,
            interval_s=self.cfg.interval_s,
            **extra,
        )

    async def publish_forever(self) -> None:
        """The link's MQTT session: connect, subscribe to ``cmd``, birth, drain; reconnect for ever."""
        await self.session.run()

    async def _serve(self, conn: MqttConnection, session_present: bool) -> None:
        await self._drain(conn)

    async def _drain(self, conn: MqttConnection) -> None:
        """Birth, then live readings first and the backlog at a bounded rate, until the link drops.

        A refused message (:class:`PublishRefused`) leaves its readings in the buffer; the cursors
        do not move past them, so they are offered again, in order, once the backoff has passed.
        """
        buffer, loop = self.agent.buffer, asyncio.get_running_loop()
        sensor_type = self.driver.sensor_type
        boundary = await loop.run_in_executor(None, buffer.last_id, self.key)  # older = backlog
        live_after, backlog_after = boundary, 0
        replay_budget, budget_at = 0.0, time.monotonic()
        next_health = 0.0
        birth_at = 0.0  # when the birth is (re)sent; inf once the broker took it
        retry_at = 0.0  # readings the broker refused wait until then
        while not conn.closed.done():
            now = time.monotonic()
            if now >= birth_at:
                try:
                    await _publish(conn, TopicKind.STATUS, self.topics, self._birth())
                    self._accepted(TopicKind.STATUS)
                    birth_at = float("inf")
                except PublishRefused as exc:
                    birth_at = time.monotonic() + self._refused_by_broker(TopicKind.STATUS, exc)
            if now >= next_health:
                await _publish(conn, TopicKind.HEALTH, self.topics, self._health())
                next_health = now + self.agent.cfg.health_every_s
            if now < retry_at:
                wake = min(retry_at, birth_at, next_health)
                await asyncio.wait({conn.closed}, timeout=max(0.0, wake - time.monotonic()))
                continue
            sent = False
            try:
                live = await loop.run_in_executor(
                    None, partial(buffer.pending, self.key, MAX_READINGS, after_id=live_after)
                )
                if live:
                    await self._send(conn, sensor_type, live)
                    live_after = live[-1].id
                    sent = True
                rate = self.agent.cfg.replay_rate
                now = time.monotonic()
                replay_budget = min(replay_budget + (now - budget_at) * rate, 1000.0)
                budget_at = now
                if backlog_after < boundary and replay_budget >= 1:
                    limit = int(min(replay_budget, 1000))
                    rows = await loop.run_in_executor(
                        None, partial(buffer.pending, self.key, limit, after_id=backlog_after)
                    )
                    rows = [r for r in rows if r.id <= boundary]
                    if rows:
                        await self._send(conn, sensor_type, rows)
                        backlog_after = rows[-1].id
                        replay_budget -= len(rows)
                        sent = True
                    else:
                        backlog_after = boundary
            except PublishRefused as exc:
                retry_at = time.monotonic() + self._refused_by_broker(TopicKind.TELEMETRY, exc)
                continue
            if not sent:
                self.new_data.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.new_data.wait(), min(1.0, max(0.0, birth_at - now)))

    def _refused_by_broker(self, kind: TopicKind, exc: PublishRefused) -> float:
        """Count a refused message, log it if the refusal is new, and return the delay before the retry."""
        self.errors["puback_refused"] = self.errors.get("puback_refused", 0) + 1
        delay = self._refusals.next()
        if self._refused.get(kind) != exc.code:
            self._refused[kind] = exc.code
            endpoint = self.session.endpoint
            log.error(
                "the broker refused a message; its readings stay in the buffer and are offered again",
                sensor=self.cfg.sensor_id,
                topic=exc.topic,
                code=f"0x{exc.code:02X}",
                reason=exc.reason,
                hint=hint(exc, user=endpoint.username if endpoint else None, source=self.session.plan.source),
                retrying=f"with backoff up to {self.agent.cfg.reconnect_max_s:g} s, quiet until this changes",
            )
        return delay

    def _accepted(self, kind: TopicKind) -> None:
        if self._refused.pop(kind, None) is not None:
            log.info(
                "the broker accepts the sensor's messages again",
                sensor=self.cfg.sensor_id,
                channel=kind.value,
            )
            if not self._refused:
                self._refusals.reset()

    async def _send(self, conn: MqttConnection, sensor_type: str, rows: list[Any]) -> None:
        """Publish one message of these rows and delete them once the broker's PUBACK accepted it."""
        payload = single_payload(sensor_type, rows[0]) if len(rows) == 1 else batch_payload(sensor_type, rows)
        await _publish(conn, TopicKind.TELEMETRY, self.topics, payload)
        self._accepted(TopicKind.TELEMETRY)
        await asyncio.get_running_loop().run_in_executor(None, self.agent.buffer.ack, [r.id for r in rows])

    # -- commands (QoS 2 on moby/<factory>/<sensor>/cmd) ------------------------------------------
    def _on_command(self, conn: MqttConnection, topic: str, payload: bytes, qos: int, mid: int) -> None:
        """``{"cmd": "set_interval", "interval_s": 2}``, ``{"cmd": "birth"}``, ``{"cmd": "ping", "id": …}``.

        A ping is answered with an immediate health report carrying ``"pong": <id>``; a new
        interval is confirmed the same way and by a new birth message. Anything else is counted
        in the health report's ``errors.bad_command`` and logged, never fatal.
        """
        try:
            command = orjson.loads(payload)
            name = command["cmd"]
            if name == "set_interval":
                interval = float(command["interval_s"])
                if not 0.001 <= interval <= 86400:
                    raise ValueError(f"interval_s {interval} is outside 0.001-86400")
                self.cfg = self.cfg.model_copy(update={"interval_s": interval})
                _send_soon(conn, TopicKind.HEALTH, self.topics, self._health(applied="set_interval"))
                _send_soon(conn, TopicKind.STATUS, self.topics, self._birth())
            elif name == "birth":
                _send_soon(conn, TopicKind.STATUS, self.topics, self._birth())
            elif name == "ping":
                _send_soon(conn, TopicKind.HEALTH, self.topics, self._health(pong=command.get("id")))
            else:
                raise ValueError(f"unknown command {name!r}")
            log.info("command applied", sensor=self.cfg.sensor_id, cmd=name)
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            self.errors["bad_command"] = self.errors.get("bad_command", 0) + 1
            log.warning("bad command ignored", sensor=self.cfg.sensor_id, error=str(exc)[:200])

    async def say_offline(self) -> None:
        conn = self.conn
        if conn is not None and conn.open:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_publish(conn, TopicKind.STATUS, self.topics, offline_payload()), 3)
            await conn.disconnect()


def _publish(
    conn: MqttConnection, kind: TopicKind, topics: dict[TopicKind, str], payload: bytes
) -> asyncio.Future[None]:
    """Publish with the contract's QoS policy for the channel (moby.schema.QOS_POLICY)."""
    return conn.publish(topics[kind], payload, qos=kind.qos, retain=kind.retain)


def _send_soon(conn: MqttConnection, kind: TopicKind, topics: dict[TopicKind, str], payload: bytes) -> None:
    """Publish from a callback; a lost connection only loses this reply (it is logged)."""
    topic = topics[kind]
    done = _publish(conn, kind, topics, payload)
    done.add_done_callback(
        lambda f: f.cancelled() or (f.exception() and log.info("reply not sent", topic=topic))
    )


class EdgeAgent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        cfg.buffer_path.parent.mkdir(parents=True, exist_ok=True)
        self.buffer = EdgeBuffer(
            cfg.buffer_path,
            max_bytes=cfg.buffer_max_bytes,
            max_age_s=cfg.buffer_max_age_s,
            policy=cfg.drop_policy,
        )
        self.ssl_context = tls_context(cfg.ca_file, cfg.cert_file, cfg.key_file) if cfg.tls_needed else None
        self.links = [SensorLink(self, s, make_driver(s, i, cfg._source)) for i, s in enumerate(cfg.sensors)]

    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 10.0) -> None:
        # Supervised: a bug that ends a loop is logged and the loop restarted, never a silent death.
        samplers, publishers = Supervisor(), Supervisor()
        for link in self.links:
            samplers.run(f"sample {link.cfg.sensor_id}", link.sample_forever)
            publishers.run(f"link {link.cfg.sensor_id}", link.publish_forever)
        samplers.run("expire", self._expire_forever)
        log.info(
            "edge agent started",
            factory=self.cfg.factory_id,
            sensors=len(self.links),
            backlog=self.buffer.depth(),
        )
        try:
            await stop.wait()
        finally:
            # Stop sampling, give the links a bounded time to send what is buffered, then go.
            await samplers.close()
            deadline = time.monotonic() + drain_timeout_s
            # polled: acks land from executor threads, and a 50 ms poll for a few seconds is cheap
            while self.buffer.depth() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await publishers.close()
            await asyncio.gather(*(link.say_offline() for link in self.links), return_exceptions=True)
            log.info("edge agent stopped", backlog=self.buffer.depth(), counters=self.buffer.counters())
            self.buffer.close()

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(60)
            dropped = await asyncio.get_running_loop().run_in_executor(None, self.buffer.expire)
            if dropped:
                log.warning("readings older than the buffer's age bound dropped", count=dropped)
