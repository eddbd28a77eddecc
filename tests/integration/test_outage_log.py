"""InfluxDB stopped for ~20 s under a steady stream: the writer's log tells it in a few lines.

Before, every retry of every write slot logged a warning (~40 in 20 s). Now: one line when it
goes (its URL), a summary at each interval while away (the URL it cannot reach), one line when
it is back (how long, how many points waited), and every point stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from moby.ingest.queue import DurableQueue, Segment
from moby.metrics import Metrics
from moby.outage import Outage
from moby.store.influx import InfluxClient
from moby.store.influxd import Influxd
from moby.store.writer import Writer
from tests.support import count_points

pytestmark = pytest.mark.integration

SUMMARY_S = 5.0
OUTAGE_S = 20.0


async def test_an_influxdb_outage_is_one_line_summaries_and_one_line(
    own_influxd: Influxd, tmp_path: Path
) -> None:
    db = "outage"
    client = InfluxClient(own_influxd.url, db, timeout_s=2)
    await client.query(f"CREATE DATABASE {db}", database="", method="POST")
    queue = DurableQueue(tmp_path / "queue.sqlite", max_bytes=64 * 1024**2, dlq_max_items=100, sync="normal")
    await queue.open()
    new_data = asyncio.Event()
    # The URL as an operator might configure it, password included: the log must not show it.
    url = own_influxd.url.replace("http://", "http://moby:s3cret@")
    outage = Outage(
        "InfluxDB", url, summary_every_s=SUMMARY_S, details=lambda: {"points_waiting": queue.depth_points}
    )
    writer = Writer(
        queue,
        client,
        Metrics(),
        new_data=new_data,
        batch_min_points=1,
        batch_linger_s=0.05,
        concurrency=4,
        retry_initial_s=0.05,
        retry_max_s=1.0,
        outage=outage,
    )
    sent = 0
    start_ms = int(time.time() * 1000) - 60_000

    async def feed() -> None:
        nonlocal sent
        while True:
            lines = b"".join(
                b"m,sensor_id=s1 v=1.0,seq=%di %d\n" % (seq, start_ms + seq) for seq in range(sent, sent + 10)
            )
            await queue.commit([Segment(lines, 10, start_ms + sent, int(time.time() * 1000))])
            sent += 10
            new_data.set()
            await asyncio.sleep(0.1)

    with capture_logs() as logs:
        writer.start()
        feeder = asyncio.create_task(feed())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_influxd.stop)
        stopped_at = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(own_influxd.start, 60)
        restarted_after = time.monotonic() - stopped_at
        await asyncio.sleep(1.0)
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        assert await writer.stop(60)
    await queue.close()
    await client.close()

    warnings = [e for e in logs if e["log_level"] in ("warning", "error")]
    mine = [e for e in logs if e["event"].startswith("InfluxDB")]
    assert [e["event"] for e in warnings] == [e["event"] for e in mine[:-1]], warnings
    away, *summaries, back = mine
    assert away["event"] == "InfluxDB unavailable" and away["log_level"] == "warning"
    assert away["url"] == own_influxd.url.replace("http://", "http://moby:***@")
    assert back["event"] == "InfluxDB available again" and back["log_level"] == "info"
    assert back["url"] == away["url"]
    assert OUTAGE_S - 1 <= back["down_s"] <= restarted_after + 5, (back, restarted_after)
    assert back["points_waiting"] > 0 and back["failures"] > 4
    # a summary at every interval of the outage, naming the URL it cannot reach
    assert {e["event"] for e in summaries} == {"InfluxDB still unavailable"}
    assert len(summaries) in (int(back["down_s"] // SUMMARY_S) - 1, int(back["down_s"] // SUMMARY_S))
    for k, summary in enumerate(summaries, start=1):
        assert summary["url"] == away["url"] and summary["failures"] > 0 and summary["error"]
        assert summary["down_s"] >= k * SUMMARY_S - 0.1, summaries
    assert "s3cret" not in repr(logs)
    assert count_points(own_influxd.url, db, rp="autogen") == sent
