"""``moby simulate``: a fleet of virtual edge devices in one process, on the agent's buffer.

Every reading takes the agent's path (:mod:`moby.edge.agent`): it is appended to an
:class:`~moby.edge.buffer.EdgeBuffer` (one SQLite file for the fleet,
``$MOBY_DATA_DIR/simulate-<factory>.sqlite``), which gives it its ``seq`` (persistent across
restarts); it is published QoS 1 and deleted only after the broker's PUBACK; after an outage
live readings go first and the backlog is replayed oldest-first in batch messages, rate limited.

Designed for thousands of sensors at 1 Hz on one core:

- sampling is spread over ~100 ms ticks (a slice of the fleet each), and each tick's readings
  are stored with one ``append_many`` (one transaction, one fsync) in a worker thread;
- sensors share connections: one *gateway* connection per ``per_connection`` sensors
  (default 500: 4 connections for 2,000 sensors), client id ``moby-sim-<factory>-gw<NN>``; with a
  username in the URL, connection ``k`` logs in as ``USER`` (k = 0) or ``USER.k`` and that is its
  client id (a gateway user with ``--connections``: docs/BROKER.md). On a
  connection, every sensor's live readings of a round go out at once (one message per sensor,
  a batch if it has several) and the round's PUBACKs are acknowledged to the buffer in one
  ``DELETE``; a sensor never has two live messages in flight, so its live stream stays in order.
- A per-sensor Last Will is impossible on a shared connection. Each gateway is therefore a
  device of its own with the Will: ``moby/<factory>/sim-gw-<NN>/status`` (birth with
  ``"gateway": true`` and its sensor count; Will ``online: false``), so a crashed simulator or
  a network cut shows as its gateways going offline, while its sensors' retained status still
  says online (their last contact, in the backend's registry, goes stale). On a clean stop
  (SIGINT/SIGTERM, ``--duration``) sampling stops, the buffer drains (bounded by
  ``drain_timeout_s``), then every sensor and gateway publishes an explicit offline status.
- health reports every ``health_every_s`` per sensor, QoS 0 (2,000 sensors every 10 s is 200
  messages/s that may be lost without harm).

The connections are :mod:`moby.edge.gateway`; the sensors :mod:`moby.edge.fleet`. Faults
(:mod:`moby.edge.faults`) are applied between driver and buffer; network cuts abort every
gateway connection and keep them down for the cut; malformed messages go straight to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from moby import __version__
from moby.edge.buffer import BufferedReading, DropPolicy, EdgeBuffer, batch_payload, single_payload
from moby.edge.faults import MALFORMED_KINDS, FaultPlan, malformed_payload
from moby.edge.fleet import VirtualSensor, make_fleet, sample
from moby.edge.gateway import Gateway
from moby.edge.messages import birth_payload, health_payload, now_ms
from moby.schema import TopicKind

log = structlog.get_logger(__name__)

TICK_S = 0.1  # sampling is spread over ticks this long


def buffer_path(data_dir: Path, factory_id: str) -> Path:
    return data_dir / f"simulate-{factory_id}.sqlite"


@dataclass(frozen=True)
class SimConfig:
    factory_id: str = "demo"
    sensors: int = 40
    rate: float = 1.0  # readings/s per sensor; 0: take none, only send what is buffered
    brokers: tuple[str, ...] = ("mqtt://127.0.0.1:1883",)
    data_dir: Path = Path("./var")
    ssl_context: ssl.SSLContext | None = None
    per_connection: int = 500
    health_every_s: float = 10.0
    replay_rate: float = 5000.0  # backlog readings/s per connection
    drain_timeout_s: float = 30.0
    reconnect_max_s: float = 5.0
    buffer_max_bytes: int = 512 * 1024 * 1024
    buffer_max_age_s: float = 7 * 86400
    drop_policy: DropPolicy = DropPolicy.DROP_OLDEST
    sync: Literal["full", "normal"] = "full"
    seed: int = 1
    vib_refresh: int = 10
    faults: FaultPlan = field(default_factory=FaultPlan)

    def __post_init__(self) -> None:
        if self.sensors < 1 or self.per_connection < 1 or self.rate < 0 or self.replay_rate <= 0:
            raise ValueError("sensors and per_connection must be >= 1, rate >= 0, replay_rate > 0")


class Simulator:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.buffer = EdgeBuffer(
            buffer_path(cfg.data_dir, cfg.factory_id),
            max_bytes=cfg.buffer_max_bytes,
            max_age_s=cfg.buffer_max_age_s,
            policy=cfg.drop_policy,
            sync=cfg.sync,
        )
        self.sensors = make_fleet(
            cfg.factory_id, cfg.sensors, cfg.faults, seed=cfg.seed, vib_refresh=cfg.vib_refresh
        )
        self.gateways = [
            Gateway(self, i, self.sensors[start : start + cfg.per_connection])
            for i, start in enumerate(range(0, cfg.sensors, cfg.per_connection))
        ]
        self.gateway_of = {s.key: gw for gw in self.gateways for s in gw.sensors}
        self.dispatched = self.buffer.last_id()  # rows up to this id are backlog for a new link
        self.network_up = asyncio.Event()
        self.network_up.set()
        self._sampling_done = asyncio.Event()
        self.draining = False
        self.closing = False
        self.taken = 0
        self.late_ticks = 0
        self.cuts = 0
        self.refused_by_broker = 0
        self.malformed: Counter[str] = Counter()
        self._logged_counters: dict[str, int] = {}

    # -- payloads -------------------------------------------------------------------------------
    def birth(self, sensor: VirtualSensor) -> bytes:
        return birth_payload(
            sensor_type=sensor.sensor_type,
            units=sensor.units,
            model=sensor.model,
            firmware=__version__,
            line_id=sensor.line_id,
            machine_id=sensor.machine_id,
            **({"interval_s": 1 / self.cfg.rate} if self.cfg.rate else {}),
        )

    def health(self, sensor: VirtualSensor, gateway: Gateway) -> bytes:
        extra: dict[str, Any] = {"reconnects": gateway.reconnects, "gateway": gateway.gateway_id}
        if sensor.fault.fault is not None:
            extra["simulated_fault"] = sensor.fault.fault.value  # ground truth, for detectors under test
        return health_payload(
            started=gateway.started,
            buffer_depth=self.buffer.depth(sensor.key),
            errors={**sensor.errors, **self.buffer.counters()},
            firmware=__version__,
            rssi_dbm=round(random.uniform(-75.0, -55.0), 1),
            **extra,
        )

    @staticmethod
    def payload(sensor: VirtualSensor, rows: list[BufferedReading]) -> bytes:
        if len(rows) == 1:
            return single_payload(sensor.sensor_type, rows[0])
        return batch_payload(sensor.sensor_type, rows)

    # -- the loops --------------------------------------------------------------------------------
    def _take(self, sensors: list[VirtualSensor]) -> list[BufferedReading]:
        """Read a slice of the fleet, store the readings, and return their rows (worker thread)."""
        seqs = self.buffer.append_many(sample(sensors, now_ms()))
        stored = sum(seq is not None for seq in seqs)
        self.taken += stored
        return self.buffer.oldest(stored, after_id=self.dispatched) if stored else []

    async def _sample_forever(self) -> None:
        """Take a slice of the fleet per tick until :attr:`_sampling_done` is set.

        Never cancelled in the middle of a tick: a tick's rows are on disk as soon as ``_take``
        has run, and only this loop hands them to the links (a row newer than a link's backlog
        boundary that misses its live queue is sent by no one). Cancelled while the worker
        thread stored them, they would sit in the buffer until the next start.
        """
        loop = asyncio.get_running_loop()
        interval = 1 / self.cfg.rate
        slots = max(1, min(len(self.sensors), round(interval / TICK_S)))
        slices = [self.sensors[i::slots] for i in range(slots)]
        tick = interval / slots
        next_at = time.monotonic()
        for k in itertools.count():
            if self._sampling_done.is_set():
                return
            rows = await loop.run_in_executor(None, self._take, slices[k % slots])
            for row in rows:  # on the loop, with no await: see Gateway._serve's boundary
                gateway = self.gateway_of[row.sensor_key]
                if gateway.live is not None:
                    gateway.live.append(row)
                    gateway.wake.set()
            if rows:
                self.dispatched = rows[-1].id
            next_at += tick
            delay = next_at - time.monotonic()
            if delay < -interval:  # more than a whole interval behind: skip ahead, and say so
                self.late_ticks += 1
                next_at = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sampling_done.wait(), max(0.0, delay))

    async def _cut_forever(self) -> None:
        plan = self.cfg.faults
        while True:
            await asyncio.sleep(plan.cut_every_s - plan.cut_for_s)
            self.network_up.clear()
            self.cuts += 1
            log.info("network cut", seconds=plan.cut_for_s, cut=self.cuts)
            for gateway in self.gateways:
                if gateway.conn is not None:
                    gateway.conn.abort(ConnectionError("network cut (simulated)"))
            await asyncio.sleep(plan.cut_for_s)
            self.network_up.set()
            log.info("network back", cut=self.cuts)

    async def _malformed_forever(self) -> None:
        kinds = itertools.cycle(MALFORMED_KINDS)
        rng = random.Random(self.cfg.seed)
        while True:
            await asyncio.sleep(1 / self.cfg.faults.malformed_rate)
            sensor = rng.choice(self.sensors)
            conn = self.gateway_of[sensor.key].conn
            if conn is None or not conn.open:
                continue
            kind = next(kinds)
            payload = malformed_payload(kind, sensor.sensor_type, sensor.sensor_id)
            with contextlib.suppress(ConnectionError):  # MqttError (a refusal) is a ConnectionError
                await conn.publish(sensor.topics[TopicKind.TELEMETRY], payload, qos=TopicKind.TELEMETRY.qos)
                self.malformed[kind] += 1

    async def _housekeeping_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(30)
            dropped = await loop.run_in_executor(None, self.buffer.expire)
            counters = self.buffer.counters()
            grown = {
                k: v - self._logged_counters.get(k, 0)
                for k, v in counters.items()
                if v > self._logged_counters.get(k, 0)
            }
            if dropped or grown:
                log.warning("buffer dropped readings", **grown)
                self._logged_counters = counters

    def backlog(self) -> int:
        """Readings of this fleet still in the buffer."""
        keys = self.gateway_of
        return sum(self.buffer.depth(k) for k in self.buffer.sensors_with_backlog() if k in keys)

    async def run(self, stop: asyncio.Event, duration_s: float | None = None) -> dict[str, Any]:
        cfg = self.cfg
        log.info(
            "simulator started",
            factory=cfg.factory_id,
            sensors=len(self.sensors),
            connections=len(self.gateways),
            rate=cfg.rate,
            backlog=self.backlog(),
            faults={s.sensor_id: s.fault.fault.value for s in self.sensors if s.fault.fault} or None,
        )
        sampler = asyncio.create_task(self._sample_forever()) if cfg.rate > 0 else None
        producers = []
        if cfg.faults.cut_every_s:
            producers.append(asyncio.create_task(self._cut_forever()))
        if cfg.faults.malformed_rate:
            producers.append(asyncio.create_task(self._malformed_forever()))
        producers.append(asyncio.create_task(self._housekeeping_forever()))
        links = [asyncio.create_task(gw.run_forever()) for gw in self.gateways]
        started = time.monotonic()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration_s)
        finally:
            self._sampling_done.set()  # the sampler ends after its current tick, never inside one
            for task in producers:
                task.cancel()
            await asyncio.gather(*producers, *([sampler] if sampler else []), return_exceptions=True)
            sampled_s = time.monotonic() - started
            self.network_up.set()  # a cut in progress ends: the buffer is to drain
            self.draining = True
            deadline = time.monotonic() + cfg.drain_timeout_s
            # polled: acks land from worker threads; a 100 ms poll for a few seconds is cheap
            while self.backlog() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            self.closing = True
            for gw in self.gateways:
                gw.wake.set()
            said = await asyncio.gather(*(gw.say_offline() for gw in self.gateways))
            await asyncio.wait(links, timeout=1)
            for task in links:
                task.cancel()
            await asyncio.gather(*links, return_exceptions=True)
            for gw in self.gateways:
                if gw.conn is not None:
                    gw.conn.abort()
            summary = {
                "taken": self.taken,
                "seconds": round(sampled_s, 2),
                "left_in_buffer": self.backlog(),
                "late_ticks": self.late_ticks,
                "cuts": self.cuts,
                "malformed_sent": dict(self.malformed),
                "refused_by_broker": self.refused_by_broker,
                "offline_published": sum(said),
                "buffer_counters": self.buffer.counters(),
            }
            self.buffer.close()
            log.info("simulator stopped", **summary)
        return summary
