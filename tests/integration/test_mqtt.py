"""moby.mqtt against a real Mosquitto: QoS 1 both ways, batched acks, Last Will, lost connections."""

from __future__ import annotations

import asyncio

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
        monkeypatch.setattr(mqtt, "TURN_BYTES", 2**62)
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
