"""MQTT v5 for every client of the project: a lean connection on the ``mqtt5`` codec
(:mod:`~moby.mqtt.connection`), the one session loop that reconnects for ever
(:mod:`~moby.mqtt.session`), and the one error hierarchy (:mod:`~moby.mqtt.errors`)."""

from moby.mqtt.connection import (
    MAX_PACKET_BYTES,
    TURN_BYTES,
    MqttConnection,
    OversizedHandler,
    PublishHandler,
    SessionOptions,
    keepalive,
    open_connection,
    puback,
    subscribe,
)
from moby.mqtt.errors import (
    ConnectRefused,
    Disconnected,
    MqttError,
    ProtocolError,
    PublishRefused,
    Refused,
    SubscribeRefused,
)
from moby.mqtt.frames import Oversized
from moby.mqtt.session import MqttSession, SessionPlan

__all__ = [
    "MAX_PACKET_BYTES",
    "TURN_BYTES",
    "ConnectRefused",
    "Disconnected",
    "MqttConnection",
    "MqttError",
    "MqttSession",
    "Oversized",
    "OversizedHandler",
    "ProtocolError",
    "PublishHandler",
    "PublishRefused",
    "Refused",
    "SessionOptions",
    "SessionPlan",
    "SubscribeRefused",
    "keepalive",
    "open_connection",
    "puback",
    "subscribe",
]
