"""The MQTT topic grammar of the contract: ``moby/{factory_id}/{sensor_id}/{kind}``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ID_RE: Final = re.compile(ID_PATTERN)
TOPIC_ROOT: Final = "moby"


class TopicKind(StrEnum):
    """The four channels every sensor has, each with its delivery policy (:data:`QOS_POLICY`)."""

    TELEMETRY = "telemetry"
    HEALTH = "health"
    STATUS = "status"
    CMD = "cmd"

    @property
    def qos(self) -> int:
        return QOS_POLICY[self].qos

    @property
    def retain(self) -> bool:
        return QOS_POLICY[self].retain


@dataclass(frozen=True, slots=True)
class Delivery:
    qos: int
    retain: bool
    why: str


# The one QoS policy every client of the project applies (edge agent, simulator, backend
# subscriptions, operators' commands); docs/BROKER.md explains it at length.
QOS_POLICY: Final = {
    TopicKind.TELEMETRY: Delivery(
        1,
        False,
        "at least once: a lost reading is a gap in seq; a duplicate is the same InfluxDB point "
        "(same series and timestamp), so QoS 1 is exactly-once in effect without QoS 2's extra round trip",
    ),
    TopicKind.HEALTH: Delivery(
        0,
        False,
        "at most once: periodic and superseded by the next report; losing one costs nothing, "
        "and liveness comes from the retained status and the Last Will, not from health",
    ),
    TopicKind.STATUS: Delivery(
        1,
        True,
        "at least once and retained: the broker keeps each sensor's last birth/death so a "
        "(re)starting backend learns every sensor's metadata and state at once",
    ),
    TopicKind.CMD: Delivery(
        2,
        False,
        "exactly once: a command such as set_interval must neither be lost nor applied twice",
    ),
}


class TopicError(ValueError):
    """A topic that does not follow the contract's grammar."""


@dataclass(frozen=True, slots=True)
class Topic:
    factory_id: str
    sensor_id: str
    kind: TopicKind

    def __str__(self) -> str:
        return f"{TOPIC_ROOT}/{self.factory_id}/{self.sensor_id}/{self.kind.value}"

    @classmethod
    def build(cls, factory_id: str, sensor_id: str, kind: TopicKind | str) -> Topic:
        """A topic from its parts, checking every ID."""
        for name, value in (("factory_id", factory_id), ("sensor_id", sensor_id)):
            if not ID_RE.fullmatch(value):  # fullmatch: "$" alone would accept a trailing "\n"
                raise TopicError(f"{name} {value!r} does not match {ID_PATTERN}")
        return cls(factory_id, sensor_id, TopicKind(kind))


def parse_topic(topic: str) -> Topic:
    """Split a topic into its parts or raise :class:`TopicError` saying why not."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT:
        raise TopicError(f"topic {topic[:200]!r} is not moby/<factory_id>/<sensor_id>/<kind>")
    _, factory_id, sensor_id, kind = parts
    try:
        return Topic.build(factory_id, sensor_id, kind)
    except ValueError as exc:
        raise TopicError(str(exc)) from None


def subscription(kind: TopicKind, share_group: str | None = None) -> str:
    """The wildcard filter for one channel of every sensor, optionally as a v5 shared subscription."""
    base = f"{TOPIC_ROOT}/+/+/{kind.value}"
    return f"$share/{share_group}/{base}" if share_group else base
