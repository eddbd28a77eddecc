"""A sensor's buffered readings have strictly increasing timestamps.

In InfluxDB a point is its series and its timestamp: two readings of one sensor in the same
millisecond would be one point, the later one's values (``seq`` included) replacing the earlier
one's — a reading the edge had deleted as acknowledged, missing downstream with no trace. A late
sampler catching up takes readings less than a millisecond apart; so the buffer stamps each one
after its sensor's previous one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from moby.edge.agent import AgentConfig, EdgeAgent
from moby.edge.buffer import EdgeBuffer, NewReading

TS = 1_764_139_251_123


def stored(buf: EdgeBuffer, key: str) -> list[tuple[int, int]]:
    return [(r.seq, r.ts_ms) for r in buf.pending(key, 1000)]


def test_readings_of_one_sensor_in_the_same_millisecond_get_distinct_times(tmp_path: Path) -> None:
    with EdgeBuffer(tmp_path / "b.sqlite", max_bytes=1 << 24, max_age_s=86400) as buf:
        buf.append_many([NewReading("f1/a", TS, {"v": 1.0}), NewReading("f1/a", TS, {"v": 2.0})])
        buf.append("f1/a", TS, {"v": 3.0})
        buf.append("f1/a", TS - 5, {"v": 4.0})  # a clock slewed back a little
        buf.append("f1/a", TS + 100, {"v": 5.0})  # back on time: kept as it is
        buf.append("f1/b", TS, {"v": 1.0})  # another sensor is another series: untouched
        assert stored(buf, "f1/a") == [(0, TS), (1, TS + 1), (2, TS + 2), (3, TS + 3), (4, TS + 100)]
        assert stored(buf, "f1/b") == [(0, TS)]
        assert [r.reading()["ts"] for r in buf.pending("f1/a", 10)][:2] == [
            TS,
            TS + 1,
        ]  # the body says so too
    with EdgeBuffer(tmp_path / "b.sqlite", max_bytes=1 << 24, max_age_s=86400) as buf:
        buf.append("f1/a", TS + 100, {"v": 6.0})  # after a restart: still after what is buffered
        assert stored(buf, "f1/a")[-1] == (5, TS + 101)


def test_a_late_sampler_catching_up_never_stores_two_readings_at_one_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's sampler runs behind (the loop was busy) and takes the missed readings back to
    back: with a coarse clock they all read the same millisecond."""
    cfg = AgentConfig.model_validate(
        {
            "factory_id": "f1",
            "buffer_path": str(tmp_path / "buf.sqlite"),
            "sensors": [{"sensor_id": "temp-1", "type": "temperature", "interval_s": 0.01}],
        }
    )
    agent = EdgeAgent(cfg)
    link = agent.links[0]
    frozen = SimpleNamespace(time=lambda: TS / 1000, monotonic=time.monotonic)
    monkeypatch.setattr("moby.edge.agent.time", frozen)

    async def run() -> None:
        sampler = asyncio.create_task(link.sample_forever())
        await asyncio.sleep(0)
        time.sleep(0.2)  # noqa: ASYNC251 - the point: the event loop stalls, ~20 readings fall due at once
        await asyncio.sleep(0.3)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)

    asyncio.run(run())
    rows = agent.buffer.pending(link.key, 1000)
    agent.buffer.close()
    assert len(rows) > 10
    times = [r.ts_ms for r in rows]
    assert len(set(times)) == len(times)
