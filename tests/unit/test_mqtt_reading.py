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


async def test_a_large_chunk_pauses_reading_for_one_loop_turn() -> None:
    got: list[int] = []
    conn, transport = connection(lambda c, t, p, q, mid: got.append(mid))
    conn.data_received(publish(10, 4000))
    assert got == list(range(1, 11))
    assert not transport.reading
    await asyncio.sleep(0)
    assert transport.reading


async def test_a_small_chunk_keeps_reading() -> None:
    conn, transport = connection(lambda *a: None)
    conn.data_received(publish(2, 100))
    assert transport.reading


async def test_flow_control_pause_outlasts_the_loop_turn() -> None:
    conn, transport = connection(lambda c, *a: c.pause_reading())  # e.g. too many unacked messages
    conn.data_received(publish(10, 4000))
    await asyncio.sleep(0)
    assert not transport.reading  # still held by flow control
    conn.resume_reading()
    assert transport.reading


async def test_flow_control_pausing_during_the_turn_is_not_undone_by_it() -> None:
    conn, transport = connection(lambda *a: None)
    conn.data_received(publish(10, 4000))  # yielding: paused until the loop comes round
    conn.pause_reading()  # and flow control stops reading too, before it does
    await asyncio.sleep(0)
    assert not transport.reading
    conn.resume_reading()
    assert transport.reading


async def test_flow_control_resuming_during_the_turn_waits_for_it() -> None:
    conn, transport = connection(lambda *a: None)
    conn.data_received(publish(10, 4000))
    conn.pause_reading()
    conn.resume_reading()
    assert not transport.reading  # the loop has not had its turn yet
    await asyncio.sleep(0)
    assert transport.reading
