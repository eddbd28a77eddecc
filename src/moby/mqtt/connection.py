"""A lean MQTT v5 connection: asyncio transport + the ``mqtt5`` packet codec (Rust).

Shared by the backend's subscriber (:mod:`moby.ingest.subscriber`) and the edge side, which
publishes QoS 1 with a future per PUBACK (:meth:`MqttConnection.publish`) and a Last Will.

Why not a full client library: the backend's hot path is "parse a PUBLISH, hand it on, later
acknowledge a whole group of them at once". gmqtt spends ~25 µs of Python per QoS 1 message in
its own framing, property parsing and per-message PUBACK writes, which capped one backend near
5,000 msgs/s with acknowledge-after-commit (docs/BENCHMARKS.md has the measurements). Here the
``mqtt5`` package (a sans-I/O codec written in Rust) decodes a PUBLISH in under 1 µs and
acknowledgements leave in one socket write per durable group.

What this connection does: CONNECT with a persistent session (clean start off, session expiry,
receive maximum, maximum packet size), SUBSCRIBE, QoS 0/1/2 PUBLISH in, PUBACKs out when the
caller says so, PINGREQ keep-alive with a dead-peer timeout, DISCONNECT (normal, keeping the
session). A PUBLISH larger than our maximum packet size is read past, never buffered whole
(:mod:`moby.mqtt.frames`), and handed to ``on_oversized``. Reconnection with backoff is
:class:`moby.mqtt.session.MqttSession`'s loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mqtt5
import structlog

from moby.mqtt.errors import (
    ConnectRefused,
    Disconnected,
    MqttError,
    ProtocolError,
    PublishRefused,
    SubscribeRefused,
)
from moby.mqtt.frames import Oversized, Skipper, fixed_header

log = structlog.get_logger(__name__)

# The largest packet we take from the broker, announced in CONNECT (MQTT 5 §3.1.2.11.4) so the
# broker does not send larger ones, and enforced on what arrives all the same. Well above the
# contract's 256 KiB payload, so a too-large message still reaches the backend whole and is
# dead-lettered with its payload; past this only its head is kept.
MAX_PACKET_BYTES = 4 * 1024 * 1024
# Received bytes handled per event-loop turn before the rest of the process gets a turn (~1 ms of
# single-reading messages, ~3 batch messages).
TURN_BYTES = 32 * 1024


@dataclass(frozen=True)
class SessionOptions:
    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86400
    receive_maximum: int = 1000
    clean_start: bool = False
    # Last Will: (topic, payload, qos, retain), published by the broker if we vanish.
    will: tuple[str, bytes, int, bool] | None = None
    maximum_packet_size: int = MAX_PACKET_BYTES
    # Off only to play a broker that ignores the limit (tests): the limit is enforced either way.
    announce_maximum_packet_size: bool = True


def puback(mid: int) -> bytes:
    """An MQTT v5 PUBACK with reason Success and no properties (the 2-byte short form, §3.4.2.1)."""
    return b"\x40\x02" + mid.to_bytes(2, "big")


# on_publish(connection, topic, payload, qos, packet_id); for QoS 1 the receiver must later
# call connection.ack([...packet ids...]) once the message is safe.
PublishHandler = Callable[["MqttConnection", str, bytes, int, int], None]
# on_oversized(connection, what was kept of it); acknowledged by the receiver like a PUBLISH.
OversizedHandler = Callable[["MqttConnection", Oversized], None]


class MqttConnection(asyncio.Protocol):
    """One network connection to the broker (one CONNECT … until it is lost)."""

    def __init__(
        self,
        on_publish: PublishHandler,
        *,
        on_oversized: OversizedHandler | None = None,
        max_packet_bytes: int = MAX_PACKET_BYTES,
    ) -> None:
        self._on_publish = on_publish
        self._on_oversized = on_oversized
        self.max_packet_bytes = max_packet_bytes
        self._buffer = bytearray()
        self._skipper: Skipper | None = None  # reading past an oversized PUBLISH
        self._transport: asyncio.Transport | None = None
        self._waiters: dict[type, asyncio.Future[Any]] = {}
        # our QoS 1 publishes in flight: packet id -> (future, topic)
        self._pubacks: dict[int, tuple[asyncio.Future[None], str]] = {}
        self._next_mid = 0
        self._qos2_received: set[int] = set()  # QoS 2 packet ids delivered, awaiting PUBREL
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.last_received = time.monotonic()
        self._held = False  # reading paused by the user (flow control)
        self._yielding = False  # reading paused until the loop's next turn handles more of the buffer
        # QoS 1/2 publishes the broker accepts in flight from us (its CONNACK's receive maximum).
        self.receive_maximum = 65535

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(exc)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("connection lost"))
        for future, _ in self._pubacks.values():
            if not future.done():
                future.set_exception(ConnectionError("connection lost"))
        self._pubacks.clear()

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        if self._skipper is not None:
            data = self._skip(data)
            if not data:
                return
        self._buffer += data
        if not self._yielding:  # else a turn is already scheduled to go on with the buffer
            self._process()

    def _skip(self, data: bytes) -> bytes:
        """Feed an oversized PUBLISH in progress; the bytes after it (if it ended here)."""
        skipper = self._skipper
        assert skipper is not None
        taken = skipper.feed(memoryview(data))
        if not skipper.done:
            return b""
        self._skipper = None
        try:
            self._oversized(skipper.result())
        except ProtocolError as exc:
            self._protocol_error(exc)
            return b""
        return data[taken:]

    def _process(self) -> None:
        """Handle the buffered packets, at most ~TURN_BYTES of them before giving the loop a turn.

        With a backlog at the broker, libuv reads a socket up to 32 times per poll (256 KiB each
        under uvloop) and hands every chunk straight to :meth:`data_received`: megabytes of
        messages would be processed in one go, during which the loop runs nothing else —
        measured starving the InfluxDB writer (and the HTTP API) for a second at a time while a
        backlog drained, so writes happened after ingest instead of beside it. Past the budget,
        reading pauses and the rest of the buffer is handled a budget per loop turn; reading
        resumes when the buffer is drained (unless flow control holds it).
        """
        buffer = self._buffer
        view = memoryview(buffer)
        offset, end, budget = 0, len(buffer), TURN_BYTES
        spent = False
        try:
            while offset < end:
                if offset >= budget:
                    spent = True
                    break
                try:
                    packet, size = mqtt5.read(view[offset:])
                except IndexError:  # the codec's "not enough bytes": wait for the rest, unless too big
                    header = fixed_header(view, offset)
                    if header is not None and header[1] + header[2] > self.max_packet_bytes:
                        # Read past it as it arrives instead of buffering it (frames.py says why).
                        self._skipper = Skipper(*header)
                        offset += self._skipper.feed(view[offset:])
                    break
                if size > self.max_packet_bytes:  # arrived whole in one read: refused all the same
                    header = fixed_header(view, offset)
                    assert header is not None
                    skipper = Skipper(*header)
                    skipper.feed(view[offset : offset + size])
                    offset += size
                    self._oversized(skipper.result())
                    continue
                offset += size
                if isinstance(packet, mqtt5.PublishPacket):
                    qos, mid = int(packet.qos), packet.packet_id or 0
                    if qos == 2:
                        self._exactly_once(packet, mid)
                    else:
                        self._on_publish(self, packet.topic, packet.payload, qos, mid)
                else:
                    self._dispatch(packet)
        except (MqttError, ValueError) as exc:
            # Only the codec and the framing raise these (handlers report bad input as data).
            view.release()
            self._protocol_error(exc)
            return
        view.release()
        del buffer[:offset]
        if spent and self._transport is not None:
            self._yielding = True
            self._transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _protocol_error(self, exc: Exception) -> None:
        self._buffer.clear()
        self.abort(
            exc if isinstance(exc, MqttError) else ProtocolError(f"protocol error from the broker: {exc}")
        )

    def _next_turn(self) -> None:
        self._yielding = False
        if self._transport is None:
            return
        self._process()
        if not self._yielding and not self._held:
            self._transport.resume_reading()

    def _exactly_once(self, packet: Any, mid: int) -> None:
        """QoS 2 in (§4.3.3, method B): deliver on the first PUBLISH of a packet id, answer PUBREC;
        a resent PUBLISH before PUBREL is not delivered again; PUBREL frees the id (PUBCOMP)."""
        if mid not in self._qos2_received:
            self._qos2_received.add(mid)
            self._on_publish(self, packet.topic, packet.payload, 2, mid)
        self.send(mqtt5.PubRecPacket(mid).write())

    def _oversized(self, message: Oversized) -> None:
        """An oversized PUBLISH read past: hand it on once (QoS 2: like :meth:`_exactly_once`)."""
        if message.qos == 2:
            first = message.packet_id not in self._qos2_received
            self._qos2_received.add(message.packet_id)
            if first:
                self._hand_on_oversized(message)
            self.send(mqtt5.PubRecPacket(message.packet_id).write())
            return
        self._hand_on_oversized(message)

    def _hand_on_oversized(self, message: Oversized) -> None:
        if self._on_oversized is not None:
            self._on_oversized(self, message)
            return
        log.warning(
            "message over the maximum packet size dropped",
            topic=message.topic[:200],
            bytes=message.size,
            limit=self.max_packet_bytes,
        )
        if message.qos == 1:
            self.ack([message.packet_id])

    def _dispatch(self, packet: Any) -> None:
        if isinstance(packet, mqtt5.PingRespPacket):
            return
        if isinstance(packet, mqtt5.PubRelPacket):
            self._qos2_received.discard(packet.packet_id)
            self.send(mqtt5.PubCompPacket(packet.packet_id).write())
            return
        if isinstance(packet, mqtt5.PubAckPacket):
            entry = self._pubacks.pop(packet.packet_id, None)
            if entry is not None and not entry[0].done():
                code = int(packet.reason_code.value)
                if code >= 0x80:
                    entry[0].set_exception(PublishRefused(code, entry[1], packet.reason_str))
                else:
                    entry[0].set_result(None)
            return
        if isinstance(packet, mqtt5.DisconnectPacket):
            self.abort(Disconnected(int(packet.reason_code.value), packet.reason_str))
            return
        waiter = self._waiters.pop(type(packet), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(packet)
        else:
            log.debug("unexpected packet", packet=type(packet).__name__)

    # -- sending ---------------------------------------------------------------------------------
    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def pause_reading(self) -> None:
        """Stop reading the socket (TCP backpressure) until :meth:`resume_reading`."""
        self._held = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._held = False
        if self._yielding:
            return  # _next_turn resumes once the buffer is drained
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future[None]:
        """Send a PUBLISH; for QoS 1 the future resolves on the broker's PUBACK (QoS 0: at once).

        The caller bounds how many it keeps in flight (the broker's receive maximum). If the
        connection is lost first, the future fails with ConnectionError: publish again on the next
        connection (at-least-once; the backend treats the duplicate as the same point). A PUBACK
        with a reason code >= 0x80 fails it with :class:`PublishRefused`; the connection stays.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if qos == 0:
            self.send(mqtt5.PublishPacket(topic=topic, payload=payload, retain=retain).write())
            future.set_result(None)
            return future
        if not self.open:
            future.set_exception(ConnectionError("not connected"))
            return future
        for _ in range(65535):
            self._next_mid = self._next_mid % 65535 + 1
            if self._next_mid not in self._pubacks:
                break
        else:
            raise MqttError("all 65,535 packet ids are in flight")
        self._pubacks[self._next_mid] = (future, topic)
        packet = mqtt5.PublishPacket(
            topic=topic, payload=payload, qos=mqtt5.QoS(qos), retain=retain, packet_id=self._next_mid
        )
        self.send(packet.write())
        return future

    @property
    def in_flight(self) -> int:
        return len(self._pubacks)

    def ack(self, packet_ids: Sequence[int]) -> None:
        """PUBACK these QoS 1 messages in one write (dropped if this connection is gone:
        the broker then redelivers them on the next connection of the session)."""
        if packet_ids and self.open:
            self.send(b"".join(puback(mid) for mid in packet_ids))

    async def request(self, packet: Any, reply: type, timeout_s: float = 10.0) -> Any:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[reply] = waiter
        self.send(packet.write())
        return await asyncio.wait_for(waiter, timeout_s)

    def abort(self, exc: Exception | None = None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        if self._transport is not None:
            self._transport.abort()

    async def disconnect(self) -> None:
        """A normal DISCONNECT: the broker keeps our session (and queues for it)."""
        if self.open:
            self.send(mqtt5.DisconnectPacket().write())
            assert self._transport is not None
            self._transport.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), 5)


def _will(will: tuple[str, bytes, int, bool] | None) -> mqtt5.Will | None:
    if will is None:
        return None
    topic, payload, qos, retain = will
    return mqtt5.Will(topic=topic, payload=payload, qos=mqtt5.QoS(qos), retain=retain)


async def open_connection(
    host: str,
    port: int,
    options: SessionOptions,
    on_publish: PublishHandler,
    *,
    on_oversized: OversizedHandler | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout_s: float = 10.0,
) -> tuple[MqttConnection, bool]:
    """Connect and complete the MQTT handshake; returns the connection and session_present.

    Raises OSError/TimeoutError if the broker cannot be reached, :class:`ConnectRefused` if it
    answers CONNACK with a reason code >= 0x80 (all of them ConnectionErrors but the TimeoutError).
    """
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(
        loop.create_connection(
            lambda: MqttConnection(
                on_publish, on_oversized=on_oversized, max_packet_bytes=options.maximum_packet_size
            ),
            host,
            port,
            ssl=ssl_context,
            server_hostname=host if ssl_context else None,
        ),
        timeout_s,
    )
    connect = mqtt5.ConnectPacket(
        client_id=options.client_id,
        username=options.username,
        password=options.password.encode() if options.password is not None else None,
        clean_start=options.clean_start,
        keep_alive=options.keepalive_s,
        session_expiry_interval=options.session_expiry_s,
        receive_max=options.receive_maximum,
        max_packet_size=options.maximum_packet_size if options.announce_maximum_packet_size else None,
        will=_will(options.will),
    )
    try:
        connack = await conn.request(connect, mqtt5.ConnAckPacket, timeout_s)
    except BaseException:
        conn.abort()
        raise
    code = int(connack.reason_code.value)
    if code >= 0x80:
        conn.abort()
        raise ConnectRefused(code, connack.reason_str)
    conn.receive_maximum = int(connack.receive_max or 65535)
    return conn, bool(connack.session_present)


async def subscribe(
    conn: MqttConnection, filters: Sequence[str], qos: int = 1, timeout_s: float = 10.0
) -> None:
    """SUBSCRIBE and wait for the SUBACK; :class:`SubscribeRefused` if any filter was refused."""
    packet = mqtt5.SubscribePacket(
        packet_id=1,
        topic_filters=[mqtt5.TopicFilter(f, max_qos=mqtt5.QoS(qos)) for f in filters],
    )
    suback = await conn.request(packet, mqtt5.SubAckPacket, timeout_s)
    granted = [int(code.value) if hasattr(code, "value") else int(code) for code in suback.reason_codes]
    refused = [(f, code) for f, code in zip(filters, granted, strict=True) if code >= 0x80]
    if refused:
        raise SubscribeRefused(refused[0][1], [f for f, _ in refused])


async def keepalive(conn: MqttConnection, keepalive_s: int) -> None:
    """PINGREQ at half the keep-alive; drop the connection if the broker goes silent."""
    ping = mqtt5.PingReqPacket().write()
    interval = max(1.0, keepalive_s / 2)
    while conn.open:
        await asyncio.sleep(interval)
        if time.monotonic() - conn.last_received > keepalive_s * 1.5:
            conn.abort(TimeoutError("broker silent past the keep-alive"))
            return
        conn.send(ping)
