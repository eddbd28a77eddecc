"""Every reading the edge deletes as acknowledged is a point of its own in InfluxDB.

In InfluxDB a point *is* its series and timestamp. Two readings of one sensor stamped in the same
millisecond — a sampler catching up after a stall, or a coarse clock (Windows ticks every
15.6 ms) — were one point: the later one's values, ``seq`` included, replaced the earlier one's,
so a reading the broker had acknowledged and the edge had deleted was missing downstream with no
trace (seen as ``temp-1: 1 of 1415 missing`` in the outage test under load). Here the agent's
clock ticks every 10 ms while it samples every 5 ms: every reading must still be stored.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from moby.edge.agent import AgentConfig, EdgeAgent
from moby.edge.buffer import EdgeBuffer, sensor_key
from tests.support import influx_query

pytestmark = pytest.mark.integration


def seqs(influx_url: str, db: str, sensor: str) -> list[int]:
    res = influx_query(influx_url, f"SELECT seq FROM /.*/ WHERE sensor_id = '{sensor}'", db)
    return sorted(v[1] for s in res[0].get("series", []) for v in s["values"])


async def test_readings_in_one_clock_tick_are_all_stored(
    tmp_path: Path, broker, influxd, make_backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(broker, influxd)
    factory = f"ts{time.time_ns() % 10**8}"
    cfg = AgentConfig.model_validate(
        {
            "factory_id": factory,
            "brokers": [broker.url],
            "buffer_path": str(tmp_path / "buf.sqlite"),
            "sensors": [{"sensor_id": "fast-1", "type": "temperature", "interval_s": 0.005}],
        }
    )
    coarse = SimpleNamespace(time=lambda: time.time() // 0.01 * 0.01, monotonic=time.monotonic)
    monkeypatch.setattr("moby.edge.agent.time", coarse)
    agent = EdgeAgent(cfg)
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(3)
    stop.set()
    await running
    with EdgeBuffer(tmp_path / "buf.sqlite", max_bytes=1 << 30, max_age_s=86400) as buffer:
        taken = buffer.next_seq(sensor_key(factory, "fast-1"))
        assert buffer.depth() == 0  # all acknowledged by the broker and deleted
    assert taken > 100
    expected = list(range(taken))
    got: list[int] = []
    for _ in range(60):
        got = await asyncio.to_thread(seqs, influxd.url, backend.db, "fast-1")
        if len(got) == taken:
            break
        await asyncio.sleep(0.5)
    missing = sorted(set(expected) - set(got))
    assert got == expected, f"{len(missing)} of {taken} missing: {missing[:20]}"
