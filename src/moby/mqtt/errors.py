"""What can go wrong talking MQTT: one hierarchy, handled the same way by every client.

:class:`MqttError` is a :class:`ConnectionError`, so code that survives a lost connection
(reconnect with backoff) survives a refusal or a protocol error the same way, and no client can
let one escape by catching only ``OSError``/``ConnectionError``. A :class:`Refused` carries the
broker's MQTT v5 reason code; :func:`hint` turns it into what an operator should check.

::

    MqttError (ConnectionError)
    ├── ProtocolError         bytes we do not accept from the broker
    └── Refused               a reason code >= 0x80 from the broker
        ├── ConnectRefused    CONNACK: the session never started
        ├── SubscribeRefused  SUBACK: a topic filter was not granted
        ├── Disconnected      DISCONNECT from the broker
        └── PublishRefused    PUBACK: one message not accepted; the connection stays up
"""

from __future__ import annotations

from collections.abc import Sequence

# MQTT 5.0 §2.4, the reason codes a broker uses to refuse (>= 0x80).
REASONS: dict[int, str] = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x92: "packet identifier not found",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def reason_name(code: int) -> str:
    return REASONS.get(code, "success" if code < 0x80 else "unknown reason")


class MqttError(ConnectionError):
    """The broker refused us, or spoke something we do not accept."""


class ProtocolError(MqttError):
    """Bytes from the broker that are not MQTT v5 as we accept it."""


class Refused(MqttError):
    """The broker answered with a reason code >= 0x80."""

    packet = "?"
    verb = "refused"

    def __init__(self, code: int, detail: str | None = None) -> None:
        self.code = code
        self.detail = detail or None
        text = f"{self.packet} {self.verb}: {code} (0x{code:02X} {reason_name(code)})"
        super().__init__(f"{text}: {detail}" if detail else text)

    @property
    def reason(self) -> str:
        return reason_name(self.code)


class ConnectRefused(Refused):
    packet = "CONNACK"


class SubscribeRefused(Refused):
    packet = "SUBACK"

    def __init__(self, code: int, filters: Sequence[str]) -> None:
        self.filters = list(filters)
        super().__init__(code, f"topic filters {self.filters}")


class Disconnected(Refused):
    packet = "DISCONNECT"
    verb = "from the broker"


class PublishRefused(Refused):
    packet = "PUBACK"

    def __init__(self, code: int, topic: str, detail: str | None = None) -> None:
        self.topic = topic
        super().__init__(code, detail)


def hint(exc: BaseException, *, user: str | None, source: str) -> str | None:
    """What an operator should check, naming the URL's user (never its password)."""
    who = f"user {user!r}" if user else "no user name"
    if isinstance(exc, Refused):
        code = exc.code
        if code in (0x86, 0x87) and isinstance(exc, ConnectRefused):
            if not user:
                return f"{source} names no user and the broker refuses anonymous clients: add user:password"
            return f"check the password of {who} in {source} against the broker's password file"
        if code == 0x87 and isinstance(exc, SubscribeRefused):
            return f"the broker's ACL does not let {who} subscribe to {exc.filters}"
        if code == 0x87 and isinstance(exc, PublishRefused):
            return f"the broker's ACL does not let {who} publish to {exc.topic}"
        if code in (0x88, 0x89, 0x8B, 0x97, 0x9F):
            return "broker overloaded or restarting"
        if code == 0x85:
            return "the broker does not accept this client id (taken by another identity?)"
        if code == 0x8A:
            return f"the broker has banned {who}"
        if code == 0x8E:
            return "another client connected with the same client id"
        if code in (0x9C, 0x9D):
            return "the broker points to another server: update the broker URL"
        if code == 0x95:
            return "a message is larger than the broker's max_packet_size"
        return None
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens there: is the broker running, and is the port right?"
    if isinstance(exc, TimeoutError):
        return "no answer: broker overloaded, or a firewall drops the packets"
    name = type(exc).__name__
    if name.startswith("SSL") or "certificate" in str(exc).lower():
        return "TLS failed: check the CA file, the client certificate and the broker's host name"
    return None
