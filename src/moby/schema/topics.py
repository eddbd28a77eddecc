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
    """The four channels every sensor has, with the QoS the contract gives each."""

    TELEMETRY = "telemetry"
    HEALTH = "health"
    STATUS = "status"
    CMD = "cmd"

    @property
    def qos(self) -> int:
        return _QOS[self]


_QOS: Final = {
    TopicKind.TELEMETRY: 1,
    TopicKind.HEALTH: 0,
    TopicKind.STATUS: 1,
    TopicKind.CMD: 2,
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
