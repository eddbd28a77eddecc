"""`moby simulate` stopped while a sampling tick is being stored leaves nothing behind.

A tick's rows are on disk as soon as the worker thread stored them, and only the sampler hands
them to the connections: they are newer than every connection's backlog boundary. A sampler
cancelled while the thread was still storing (a slow disk, a loaded machine) left them to no one,
so the drain waited its whole timeout and the stop ended with them in the buffer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from moby.broker.mosquitto import Mosquitto
from moby.edge.simulate import SimConfig, Simulator

pytestmark = pytest.mark.integration


async def test_a_stop_in_the_middle_of_a_tick_leaves_nothing_in_the_buffer(
    broker: Mosquitto, tmp_path: Path
) -> None:
    cfg = SimConfig(
        factory_id="simstop",
        sensors=12,
        rate=5,
        brokers=(broker.url,),
        data_dir=tmp_path,
        drain_timeout_s=3,
    )
    sim = Simulator(cfg)
    storing = threading.Event()
    slow = threading.Event()
    take = sim._take

    def slow_take(sensors):  # type: ignore[no-untyped-def]
        rows = take(sensors)  # stored (committed) ...
        if slow.is_set():
            storing.set()
            time.sleep(0.5)  # ... and the worker thread not done with the tick yet (a loaded machine)
        return rows

    sim._take = slow_take  # type: ignore[method-assign]
    stop = asyncio.Event()
    run = asyncio.create_task(sim.run(stop))
    await asyncio.sleep(2)  # connected, sampling, sending
    slow.set()
    await asyncio.to_thread(storing.wait, 5)
    stop.set()  # while a tick is being stored
    summary = await asyncio.wait_for(run, 30)
    assert summary["left_in_buffer"] == 0
    assert summary["taken"] > 0
