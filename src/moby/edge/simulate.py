"""A simulated fleet: vibration, temperature, humidity and noise sensors publishing the contract.

One asyncio process, one MQTT connection; each sensor publishes a retained birth message,
telemetry at ``rate`` readings per second (QoS 1) and a health report every ``health_every_s``
(QoS 0), and a retained offline status when the fleet stops.
"""

from __future__ import annotations

import asyncio
import math
import random
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from gmqtt import Client
from gmqtt.mqtt.constants import MQTTv50

from moby.net import MqttEndpoint
from moby.schema import HEALTH_SCHEMA, STATUS_SCHEMA, TELEMETRY_SCHEMA, Topic, TopicKind

log = structlog.get_logger(__name__)

SENSOR_TYPES = ("vibration", "temperature", "humidity", "noise")
UNITS: dict[str, dict[str, str]] = {
    "vibration": {"rms_velocity": "mm/s", "peak_accel": "g", "crest_factor": "1", "kurtosis": "1"},
    "temperature": {"temperature": "degC"},
    "humidity": {"humidity": "%RH", "temperature": "degC"},
    "noise": {"laeq": "dB(A)", "lamax": "dB(A)"},
}


@dataclass
class SimSensor:
    factory_id: str
    sensor_id: str
    sensor_type: str
    line_id: str
    machine_id: str
    seq: int = 0
    phase: float = field(default_factory=lambda: random.uniform(0, 2 * math.pi))

    def topic(self, kind: TopicKind) -> str:
        return str(Topic(self.factory_id, self.sensor_id, kind))

    def values(self, t: float) -> dict[str, float]:
        wave = math.sin(t / 60 + self.phase)
        if self.sensor_type == "vibration":
            rms = 2.0 + 0.8 * wave + random.gauss(0, 0.1)
            return {
                "rms_velocity": round(max(rms, 0.05), 3),
                "peak_accel": round(abs(rms * 0.4 + random.gauss(0, 0.05)), 3),
                "crest_factor": round(3.0 + random.gauss(0, 0.2), 3),
                "kurtosis": round(3.0 + random.gauss(0, 0.3), 3),
            }
        if self.sensor_type == "temperature":
            return {"temperature": round(40 + 5 * math.sin(t / 86400 * 2 * math.pi) + 2 * wave, 2)}
        if self.sensor_type == "humidity":
            return {"humidity": round(45 + 10 * wave, 2), "temperature": round(24 + wave, 2)}
        return {
            "laeq": round(78 + 4 * wave + random.gauss(0, 0.5), 1),
            "lamax": round(88 + 4 * wave, 1),
        }

    def telemetry(self, now: float) -> bytes:
        self.seq += 1
        return orjson.dumps(
            {
                "schema": TELEMETRY_SCHEMA,
                "sensor_type": self.sensor_type,
                "ts": int(now * 1000),
                "seq": self.seq,
                "values": self.values(now),
            }
        )

    def birth(self) -> bytes:
        return orjson.dumps(
            {
                "schema": STATUS_SCHEMA,
                "online": True,
                "ts": int(time.time() * 1000),
                "sensor_type": self.sensor_type,
                "model": f"SIM-{self.sensor_type[:3].upper()}-1",
                "firmware": "1.0.0",
                "line_id": self.line_id,
                "machine_id": self.machine_id,
                "units": UNITS[self.sensor_type],
            }
        )


def make_fleet(factory: str, sensors: int) -> list[SimSensor]:
    return [
        SimSensor(
            factory,
            f"{SENSOR_TYPES[i % 4][:3]}-{i:04d}",
            SENSOR_TYPES[i % 4],
            line_id=f"line-{i // 40 + 1}",
            machine_id=f"m-{i // 4 + 1:03d}",
        )
        for i in range(sensors)
    ]


async def run_fleet(
    mqtt_url: str,
    factory: str,
    sensors: int,
    rate: float,
    *,
    duration_s: float | None = None,
    health_every_s: float = 10.0,
    stop: asyncio.Event | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Publish until ``stop`` is set or ``duration_s`` passes; returns readings published."""
    endpoint = MqttEndpoint.parse(mqtt_url)
    fleet = make_fleet(factory, sensors)
    client = Client(f"moby-sim-{factory}-{random.randrange(1 << 30):x}")
    if endpoint.username:
        client.set_auth_credentials(endpoint.username, endpoint.password)
    await client.connect(endpoint.host, endpoint.port, ssl=ssl_context or endpoint.tls, version=MQTTv50)
    for s in fleet:
        _publish(client, s, TopicKind.STATUS, s.birth())
    stop = stop or asyncio.Event()
    started = time.time()
    published = 0
    interval = 1.0 / rate
    next_health = started
    tick = started
    try:
        while not stop.is_set() and (duration_s is None or time.time() - started < duration_s):
            now = time.time()
            for s in fleet:
                _publish(client, s, TopicKind.TELEMETRY, s.telemetry(now))
            published += len(fleet)
            if now >= next_health:
                for s in fleet:
                    _publish(client, s, TopicKind.HEALTH, _health(started, now))
                next_health = now + health_every_s
            tick += interval
            await asyncio.sleep(max(0.0, tick - time.time()))
    finally:
        for s in fleet:
            offline: dict[str, Any] = {
                "schema": STATUS_SCHEMA,
                "online": False,
                "ts": int(time.time() * 1000),
            }
            _publish(client, s, TopicKind.STATUS, orjson.dumps(offline))
        await asyncio.sleep(0.5)
        await client.disconnect()
    log.info("fleet stopped", published=published)
    return published


def _publish(client: Client, sensor: SimSensor, kind: TopicKind, payload: bytes) -> None:
    """With the contract's QoS policy for the channel (moby.schema.QOS_POLICY)."""
    client.publish(sensor.topic(kind), payload, qos=kind.qos, retain=kind.retain)


def _health(started: float, now: float) -> bytes:
    return orjson.dumps(
        {
            "schema": HEALTH_SCHEMA,
            "ts": int(now * 1000),
            "uptime_s": round(now - started, 1),
            "buffer_depth": 0,
        }
    )
