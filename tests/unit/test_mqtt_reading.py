"""moby.mqtt.MqttConnection: who may stop and restart reading the socket, and when."""

from __future__ import annotations

import asyncio

import mqtt5

from moby import mqtt
from moby.mqtt import MqttConnection


class FakeTransport:
    def __init__(self) -> None:
        self.reading = True
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)


def publish(n: int, size: int) -> bytes:
    return b"".join(
        mqtt5.PublishPacket(topic="t", payload=b"x" * size, qos=mqtt5.QoS(1), packet_id=i + 1).write()
        for i in range(n)
    )


def connection(on_publish: mqtt.PublishHandler) -> tuple[MqttConnection, FakeTransport]:
    conn = MqttConnection(on_publish)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


async def test_a_large_chunk_is_handled_a_budget_per_loop_turn() -> None:
    got: list[int] = []
    conn, transport = connection(lambda c, t, p, q, mid: got.append(mid))
    conn.data_received(publish(20, 4000))  # ~80 kB: about three turns' worth
    assert 0 < len(got) < 20
    assert not transport.reading  # the rest waits in the buffer, the socket is not read
    seen_after_turn = [len(got)]
    for _ in range(3):
        await asyncio.sleep(0)
        seen_after_turn.append(len(got))
    assert got == list(range(1, 21))  # all, once, in order
    assert seen_after_turn[2] == 20 and seen_after_turn[0] < seen_after_turn[1] < 20  # three turns
    await asyncio.sleep(0)
    assert transport.reading


async def test_a_chunk_within_the_budget_keeps_reading() -> None:
    got: list[int] = []
    conn, transport = connection(lambda c, t, p, q, mid: got.append(mid))
    conn.data_received(publish(7, 4000))
    assert got == list(range(1, 8))
    assert transport.reading


async def test_a_packet_split_across_turns_and_reads_arrives_whole() -> None:
    got: list[bytes] = []
    conn, transport = connection(lambda c, t, p, q, mid: got.append(p))
    data = publish(12, 4000)
    conn.data_received(data[:-100])  # the last packet is incomplete
    for _ in range(3):
        await asyncio.sleep(0)
    assert transport.reading
    assert len(got) == 11
    conn.data_received(data[-100:])
    assert len(got) == 12 and all(p == b"x" * 4000 for p in got)


async def test_flow_control_pause_outlasts_the_turns() -> None:
    conn, transport = connection(lambda c, *a: c.pause_reading())  # e.g. too many unacked messages
    conn.data_received(publish(20, 4000))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not transport.reading  # still held by flow control
    conn.resume_reading()
    assert transport.reading


async def test_flow_control_resuming_during_the_turns_waits_for_the_buffer() -> None:
    got: list[int] = []
    conn, transport = connection(lambda c, t, p, q, mid: got.append(mid))
    conn.data_received(publish(20, 4000))
    conn.pause_reading()
    conn.resume_reading()
    assert not transport.reading  # the buffer is not drained yet
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(got) == 20 and transport.reading
