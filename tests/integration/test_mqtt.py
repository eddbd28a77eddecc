"""moby.mqtt against a real Mosquitto: QoS 1 both ways, batched acks, Last Will, lost connections,
and messages over the maximum packet size."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import uvloop

from moby import mqtt
from moby.broker.mosquitto import Mosquitto
from moby.mqtt import MqttConnection, SessionOptions, open_connection, subscribe

pytestmark = pytest.mark.integration


def _ignore(conn: MqttConnection, topic: str, payload: bytes, qos: int, mid: int) -> None:
    pass


async def test_publish_resolves_on_puback_and_subscriber_acks_in_batches(broker: Mosquitto) -> None:
    got: list[bytes] = []
    pending: list[int] = []

    def on_publish(conn: MqttConnection, topic: str, payload: bytes, qos: int, mid: int) -> None:
        got.append(payload)
        pending.append(mid)
        if len(pending) == 1:  # acknowledge once per event-loop turn, as the backend does
            asyncio.get_running_loop().call_soon(lambda: (conn.ack(list(pending)), pending.clear()))

    sub, _ = await open_connection("127.0.0.1", broker.port, SessionOptions(client_id="t-sub"), on_publish)
    await subscribe(sub, ["t1/#"])
    pub, _ = await open_connection(
        "127.0.0.1", broker.port, SessionOptions(client_id="t-pub"), lambda *a: None
    )
    await asyncio.wait_for(asyncio.gather(*(pub.publish("t1/x", b"%d" % i) for i in range(3000))), 30)
    assert pub.in_flight == 0
    for _ in range(100):
        if len(got) == 3000:
            break
        await asyncio.sleep(0.05)
    assert got == [b"%d" % i for i in range(3000)]  # all, once, in order
    await pub.disconnect()
    await sub.disconnect()


async def test_last_will_is_published_when_the_client_vanishes(broker: Mosquitto) -> None:
    got: list[tuple[str, bytes]] = []
    sub, _ = await open_connection(
        "127.0.0.1",
        broker.port,
        SessionOptions(client_id="t-will-sub"),
        lambda c, t, p, q, m: (got.append((t, p)), c.ack([m]) if q else None),
    )
    await subscribe(sub, ["t2/#"])
    options = SessionOptions(client_id="t-will", will=("t2/status", b'{"online":false}', 1, False))
    dying, _ = await open_connection("127.0.0.1", broker.port, options, _ignore)
    dying.abort()  # no DISCONNECT: the broker must send the will
    for _ in range(60):
        if got:
            break
        await asyncio.sleep(0.05)
    assert got == [("t2/status", b'{"online":false}')]
    await sub.disconnect()


async def test_pending_publishes_fail_when_the_connection_is_lost(own_broker: Mosquitto) -> None:
    pub, _ = await open_connection(
        "127.0.0.1", own_broker.port, SessionOptions(client_id="t-lost"), lambda *a: None
    )
    own_broker.kill_hard = True  # type: ignore[attr-defined]
    own_broker.kill()
    futures = [pub.publish("t3/x", b"x") for _ in range(10)]
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
    assert all(isinstance(r, ConnectionError) for r in results), results


@pytest.mark.parametrize("turn_bytes", [mqtt.TURN_BYTES, None])
def test_a_backlog_is_read_a_chunk_per_loop_turn(
    broker: Mosquitto, monkeypatch: pytest.MonkeyPatch, turn_bytes: int | None
) -> None:
    """Under uvloop (what `moby serve` runs on) libuv reads a socket up to 32 times per poll; a
    drained backlog must still leave the loop a turn between chunks, or everything else in the
    process (the InfluxDB writer, the HTTP API) stalls while the backlog drains.

    Run twice: as shipped, and with the yielding turned off to show the test can tell."""
    if turn_bytes is None:
        monkeypatch.setattr(mqtt.connection, "TURN_BYTES", 2**62)
    client_id = f"t-backlog-{turn_bytes}"

    async def scenario() -> list[int]:
        first, _ = await open_connection("127.0.0.1", broker.port, SessionOptions(client_id), _ignore)
        await subscribe(first, [f"{client_id}/#"])
        await first.disconnect()  # the session stays: the broker queues for it
        pub, _ = await open_connection("127.0.0.1", broker.port, SessionOptions(f"{client_id}-pub"), _ignore)
        payload = b"x" * 20_000
        await asyncio.wait_for(
            asyncio.gather(*(pub.publish(f"{client_id}/t", payload) for i in range(400))), 60
        )
        await pub.disconnect()

        turns = 0
        seen_at_turn: list[int] = []

        def on_publish(conn: MqttConnection, topic: str, payload: bytes, qos: int, mid: int) -> None:
            seen_at_turn.append(turns)
            conn.ack([mid])

        async def ticker() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        sub, _ = await open_connection(
            "127.0.0.1", broker.port, SessionOptions(client_id, receive_maximum=1000), on_publish
        )
        for _ in range(600):
            if len(seen_at_turn) >= 400:
                break
            await asyncio.sleep(0.05)
        tick.cancel()
        await sub.disconnect()
        return seen_at_turn

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        seen = runner.run(scenario())
    assert len(seen) == 400
    longest_run = max(seen.count(turn) for turn in set(seen))  # messages handled within one loop turn
    if turn_bytes is None:
        assert longest_run > 50  # the whole backlog (or most of it) in one go
    else:
        # a turn handles ~32 KiB, two of these 20 kB messages (a read and a continuation may share
        # one loop iteration)
        assert longest_run <= 4


def publish_file(port: int, topic: str, payload: bytes, tmp_path: Path) -> None:
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-f", str(path), "-V", "mqttv5"],
        check=True,
        timeout=60,
    )


async def test_an_oversized_message_from_a_broker_that_ignores_our_limit_is_read_past(
    unlimited_broker: Mosquitto, tmp_path: Path
) -> None:
    """Played here by not announcing the limit: the 5 MiB message comes, and is read past."""
    limit = 1024 * 1024
    got: list[bytes] = []
    oversized: list[mqtt.Oversized] = []

    def on_publish(conn: MqttConnection, topic: str, payload: bytes, qos: int, mid: int) -> None:
        got.append(payload)
        conn.ack([mid])

    def on_oversized(conn: MqttConnection, message: mqtt.Oversized) -> None:
        oversized.append(message)
        conn.ack([message.packet_id])

    options = SessionOptions("t-big", maximum_packet_size=limit, announce_maximum_packet_size=False)
    sub, _ = await open_connection(
        "127.0.0.1", unlimited_broker.port, options, on_publish, on_oversized=on_oversized
    )
    await subscribe(sub, ["big/#"])
    big = b"{" + b"x" * (5 * 1024 * 1024) + b"}"
    await asyncio.to_thread(publish_file, unlimited_broker.port, "big/one", big, tmp_path)
    await asyncio.to_thread(publish_file, unlimited_broker.port, "big/two", b"small", tmp_path)
    for _ in range(200):
        if got:
            break
        await asyncio.sleep(0.05)
    assert got == [b"small"] and sub.open
    assert [(m.topic, m.payload_head[:3], m.size > len(big)) for m in oversized] == [
        ("big/one", b"{xx", True)
    ]
    assert len(sub._buffer) < limit
    await sub.disconnect()
    # acknowledged: the persistent session does not hand it out again
    again, present = await open_connection(
        "127.0.0.1", unlimited_broker.port, options, on_publish, on_oversized=on_oversized
    )
    await asyncio.sleep(1)
    assert present and len(oversized) == 1 and got == [b"small"]
    await again.disconnect()


async def test_the_announced_maximum_packet_size_keeps_big_messages_away(
    unlimited_broker: Mosquitto, tmp_path: Path
) -> None:
    got: list[bytes] = []
    oversized: list[mqtt.Oversized] = []
    options = SessionOptions("t-big-announced", maximum_packet_size=1024 * 1024)
    sub, _ = await open_connection(
        "127.0.0.1",
        unlimited_broker.port,
        options,
        lambda c, t, p, q, mid: (got.append(p), c.ack([mid])),
        on_oversized=lambda c, m: oversized.append(m),
    )
    await subscribe(sub, ["big/#"])
    await asyncio.to_thread(
        publish_file, unlimited_broker.port, "big/one", b"x" * (5 * 1024 * 1024), tmp_path
    )
    await asyncio.to_thread(publish_file, unlimited_broker.port, "big/two", b"small", tmp_path)
    for _ in range(200):
        if got:
            break
        await asyncio.sleep(0.05)
    assert got == [b"small"] and oversized == [] and sub.open  # the broker dropped it for us
    await sub.disconnect()
