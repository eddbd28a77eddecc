"""What an edge device says besides readings: shared by ``moby edge`` (:mod:`moby.edge.agent`) and
``moby simulate`` (:mod:`moby.edge.simulate`). How they reach a broker is :class:`moby.mqtt.MqttSession`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from moby.schema import HEALTH_SCHEMA, STATUS_SCHEMA

# The Last Will: what the broker publishes (retained) on a device's status topic if it vanishes.
WILL_PAYLOAD = orjson.dumps({"schema": STATUS_SCHEMA, "online": False})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def birth_payload(
    *,
    sensor_type: str | None,
    units: Mapping[str, str],
    model: str,
    firmware: str,
    line_id: str | None = None,
    machine_id: str | None = None,
    **extra: Any,
) -> bytes:
    """A retained ``moby.status.v1`` birth: online, with the sensor's metadata."""
    meta: dict[str, Any] = {
        **extra,
        "schema": STATUS_SCHEMA,
        "online": True,
        "ts": now_ms(),
        "model": model,
        "firmware": firmware,
        "units": dict(units),
    }
    if sensor_type is not None:
        meta["sensor_type"] = sensor_type
    if line_id:
        meta["line_id"] = line_id
    if machine_id:
        meta["machine_id"] = machine_id
    return orjson.dumps(meta)


def offline_payload() -> bytes:
    """The explicit offline status of a clean stop (the Will says the same without a time)."""
    return orjson.dumps({"schema": STATUS_SCHEMA, "online": False, "ts": now_ms()})


def health_payload(
    *,
    started: float,
    buffer_depth: int,
    errors: Mapping[str, int],
    firmware: str,
    **extra: Any,
) -> bytes:
    """A ``moby.health.v1`` report; ``extra`` adds fields (reconnects, interval, pong, ...)."""
    return orjson.dumps(
        {
            **extra,
            "schema": HEALTH_SCHEMA,
            "ts": now_ms(),
            "uptime_s": round(max(time.time() - started, 0.0), 1),
            "buffer_depth": buffer_depth,
            "errors": {k: v for k, v in errors.items() if v},
            "firmware": firmware,
        }
    )
