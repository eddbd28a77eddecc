"""Reading past a PUBLISH larger than we accept, without ever holding it whole.

A broker that ignores the *Maximum Packet Size* we announce in CONNECT (MQTT 5 §3.1.2.11.4) may
still send us a larger PUBLISH. Dropping the connection would not help: a persistent session
redelivers the same message on the next connection, for ever. So the packet is read past as its
bytes arrive — only its head is kept (fixed header, topic, packet id, properties, the first bytes
of the payload, all bounded) — and then handed on as *oversized*, to be dead-lettered and
acknowledged like any other message we refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from moby.mqtt.errors import ProtocolError

PUBLISH = 3  # control packet type (MQTT 5 §2.1.2)
MAX_REMAINING = 268_435_455  # the largest Remaining Length a 4-byte variable integer encodes
PAYLOAD_HEAD = 1024  # bytes of an oversized payload kept for its dead letter
# Enough for the longest topic (65,535 bytes), a packet id, generous properties and the payload head.
HEAD_KEEP = 2 + 65_535 + 2 + 4 + 8192 + PAYLOAD_HEAD


def fixed_header(data: memoryview, offset: int) -> tuple[int, int, int] | None:
    """``(first byte, remaining length, header length)`` of the packet at ``offset``, or None if
    the header itself is not complete yet. A Remaining Length over four bytes is malformed."""
    end = len(data)
    if offset >= end:
        return None
    first = data[offset]
    value, shift = 0, 0
    for i in range(1, 5):
        if offset + i >= end:
            return None
        byte = data[offset + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return first, value, i + 1
        shift += 7
    raise ProtocolError("malformed packet: Remaining Length longer than four bytes")


def _varint(data: bytes, offset: int) -> tuple[int, int] | None:
    value, shift = 0, 0
    for i in range(4):
        if offset + i >= len(data):
            return None
        byte = data[offset + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset + i + 1
        shift += 7
    return None


@dataclass(frozen=True)
class Oversized:
    """What is kept of an oversized PUBLISH."""

    topic: str
    qos: int
    packet_id: int
    size: int  # the whole packet's bytes, as its fixed header declared
    payload_head: bytes


class Skipper:
    """Consumes one oversized PUBLISH as its bytes arrive, keeping at most :data:`HEAD_KEEP` of them."""

    def __init__(self, first: int, remaining: int, header_len: int) -> None:
        qos = (first >> 1) & 0x03
        if first >> 4 != PUBLISH or qos == 3:
            raise ProtocolError(
                f"packet of {header_len + remaining} bytes is over our limit and not a PUBLISH"
            )
        self.qos = qos
        self.size = header_len + remaining
        self._header_left = header_len  # the fixed header's bytes are skipped, not kept
        self._left = remaining  # variable header + payload bytes still to come
        self._keep = min(remaining, HEAD_KEEP)
        self._head = bytearray()

    @property
    def done(self) -> bool:
        return self._header_left == 0 and self._left == 0

    def feed(self, data: memoryview) -> int:
        """Take what belongs to this packet from ``data``; the number of bytes taken."""
        taken = 0
        if self._header_left:
            n = min(self._header_left, len(data))
            self._header_left -= n
            taken = n
        n = min(self._left, len(data) - taken)
        if n:
            room = self._keep - len(self._head)
            if room > 0:
                self._head += data[taken : taken + min(n, room)]
            self._left -= n
            taken += n
        return taken

    def result(self) -> Oversized:
        """Topic, packet id and the payload's first bytes, parsed leniently (it is going to be refused)."""
        head = bytes(self._head)
        if len(head) < 2:
            raise ProtocolError("oversized PUBLISH without a topic")
        topic_len = int.from_bytes(head[:2], "big")
        at = 2 + topic_len
        if len(head) < at + (2 if self.qos else 0):
            raise ProtocolError("oversized PUBLISH shorter than its topic")
        topic = head[2:at].decode("utf-8", "replace")
        packet_id = 0
        if self.qos:
            packet_id = int.from_bytes(head[at : at + 2], "big")
            at += 2
            if packet_id == 0:
                raise ProtocolError("PUBLISH with QoS > 0 and packet id 0")
        payload_head = b""
        props = _varint(head, at)
        if props is not None and props[1] + props[0] <= len(head):
            start = props[1] + props[0]
            payload_head = head[start : start + PAYLOAD_HEAD]
        return Oversized(topic, self.qos, packet_id, self.size, payload_head)
