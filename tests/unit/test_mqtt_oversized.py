"""moby.mqtt reading past a PUBLISH larger than its maximum packet size, fed in arbitrary chunks.

A broker that ignores the Maximum Packet Size we announce may still send a larger message; the
connection must read past it without holding it whole, hand on its topic, packet id and the head
of its payload, and go on with the next packets as if nothing happened.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import mqtt5
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moby.mqtt import MqttConnection, Oversized, ProtocolError
from moby.mqtt.frames import PAYLOAD_HEAD, Skipper, fixed_header

LIMIT = 4096


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.aborted

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


@dataclass
class Seen:
    published: list[tuple[str, bytes, int, int]] = field(default_factory=list)
    oversized: list[Oversized] = field(default_factory=list)


def connection(seen: Seen, *, handler: bool = True) -> tuple[MqttConnection, FakeTransport]:
    conn = MqttConnection(
        lambda c, t, p, q, mid: seen.published.append((t, p, q, mid)),
        on_oversized=(lambda c, o: seen.oversized.append(o)) if handler else None,
        max_packet_bytes=LIMIT,
    )
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


def publish(topic: str, payload: bytes, qos: int, mid: int) -> bytes:
    packet = mqtt5.PublishPacket(
        topic=topic, payload=payload, qos=mqtt5.QoS(qos), packet_id=mid if qos else None
    )
    return bytes(packet.write())


async def feed(conn: MqttConnection, data: bytes, cuts: list[int]) -> int:
    """Feed ``data`` cut at ``cuts``, giving the loop its turns; the largest buffer seen."""
    largest = 0
    start = 0
    for cut in [*sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]:
        conn.data_received(data[start:cut])
        largest = max(largest, len(conn._buffer))
        start = cut
        for _ in range(3):
            await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.sleep(0)
    return largest


message = st.tuples(
    st.text(alphabet="abcz/_-0", min_size=1, max_size=40),
    st.sampled_from([10, 100, LIMIT - 200, LIMIT + 1, 3 * LIMIT, 40 * LIMIT]),
    st.sampled_from([0, 1]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(message, min_size=1, max_size=8), data=st.data())
def test_oversized_publishes_are_read_past_in_any_chunking(
    messages: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    stream = b""
    expected_small, expected_big = [], []
    for mid, (topic, size, qos) in enumerate(messages, start=1):
        payload = bytes([mid % 251]) * size
        packet = publish(topic, payload, qos, mid)
        stream += packet
        if len(packet) > LIMIT:
            expected_big.append((topic, qos, mid if qos else 0, len(packet), payload[:PAYLOAD_HEAD]))
        else:
            expected_small.append((topic, payload, qos, mid if qos else 0))
    cuts = data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=30))

    async def scenario() -> tuple[Seen, int, FakeTransport]:
        seen = Seen()
        conn, transport = connection(seen)
        largest = await feed(conn, stream, cuts)
        return seen, largest, transport

    seen, largest, transport = asyncio.run(scenario())
    assert not transport.aborted  # never a reconnect over a big message
    assert seen.published == expected_small
    assert [(o.topic, o.qos, o.packet_id, o.size, o.payload_head) for o in seen.oversized] == expected_big
    # never buffered whole: at most a limit's worth plus one read's chunk
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(stream))), len(stream)]
    biggest_read = max(b - a for a, b in itertools.pairwise(bounds))
    assert largest <= LIMIT + biggest_read


async def test_without_a_handler_an_oversized_qos1_message_is_acknowledged_and_dropped() -> None:
    seen = Seen()
    conn, transport = connection(seen, handler=False)
    conn.data_received(publish("big/one", b"x" * (3 * LIMIT), 1, 7) + publish("small", b"ok", 1, 8))
    assert seen.published == [("small", b"ok", 1, 8)]
    assert b"\x40\x02\x00\x07" in transport.written  # PUBACK of 7: the broker will not redeliver it
    assert not transport.aborted


async def test_an_oversized_qos2_message_is_handed_on_once_and_answered_with_pubrec() -> None:
    seen = Seen()
    conn, transport = connection(seen)
    big = publish("big/q2", b"y" * (2 * LIMIT), 2, 9)
    conn.data_received(big)
    conn.data_received(big)  # resent before PUBREL (DUP): not handed on again
    assert len(seen.oversized) == 1 and seen.oversized[0].packet_id == 9
    assert transport.written.count(bytes(mqtt5.PubRecPacket(9).write())) == 2


async def test_an_oversized_packet_that_is_not_a_publish_is_a_protocol_error() -> None:
    seen = Seen()
    conn, transport = connection(seen)
    # a SUBACK claiming 1 MiB of reason codes
    conn.data_received(bytes([0x90]) + bytes([0x80, 0x80, 0x40]) + b"\x00\x01")
    assert transport.aborted
    assert isinstance(conn.closed.result(), ProtocolError)


def test_fixed_header_parsing() -> None:
    assert fixed_header(memoryview(b"\x30"), 0) is None
    assert fixed_header(memoryview(b"\x30\x80"), 0) is None  # continuation byte pending
    assert fixed_header(memoryview(b"\x30\x7f"), 0) == (0x30, 127, 2)
    assert fixed_header(memoryview(b"\x32\xff\xff\xff\x7f"), 0) == (0x32, 268_435_455, 5)
    with pytest.raises(ProtocolError):
        fixed_header(memoryview(b"\x30\xff\xff\xff\xff\x01"), 0)


def test_the_skipper_keeps_a_bounded_head() -> None:
    packet = publish("t" * 300, b"z" * 200_000, 1, 3)
    header = fixed_header(memoryview(packet), 0)
    assert header is not None
    skipper = Skipper(*header)
    for i in range(0, len(packet), 999):
        skipper.feed(memoryview(packet[i : i + 999]))
    assert skipper.done
    result = skipper.result()
    assert (result.topic, result.packet_id, result.size) == ("t" * 300, 3, len(packet))
    assert result.payload_head == b"z" * PAYLOAD_HEAD
    assert len(skipper._head) < 80_000
