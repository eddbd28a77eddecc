"""The engine of `moby serve`: its tasks are supervised, readiness knows when one is down, and a
stop that fails says so (the process then exits non-zero).

The engine runs for real on a temporary data dir; the broker and InfluxDB are closed ports (the
tasks that need them simply keep retrying). Failures are injected into one component at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moby.config import Settings
from moby.procs import free_port
from moby.service import Engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    settings = Settings(
        data_dir=tmp_path / "data",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        influx_url=f"http://127.0.0.1:{free_port()}",
        internal_metrics_interval_s=0,
        rollup_reroll_hours=0,
    )
    e = Engine(settings)
    await e.start()
    yield e
    if not e.queue._executor._shutdown:  # the test did not stop it
        await e.stop(flush_timeout_s=0.1)


async def test_a_task_that_crashes_is_counted_reported_down_and_restarted(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = engine.writer
    original = writer._wait_for_batch
    crashes = 0

    async def crash_once() -> None:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("a bug in the writer")
        await original()

    monkeypatch.setattr(writer, "_wait_for_batch", crash_once)
    writer._task.cancel()  # type: ignore[union-attr]  # restart it so the patched method is used
    for _ in range(100):
        if engine.tasks_down():
            break
        await asyncio.sleep(0.01)
    assert "writer" in engine.tasks_down()
    for _ in range(400):
        if crashes and not engine.tasks_down():
            break
        await asyncio.sleep(0.01)
    assert engine.tasks_down() == [] and not writer._task.done()  # type: ignore[union-attr]
    assert engine.metrics.task_restarts.labels("writer")._value.get() == 2  # the cancel, the crash
    await engine.stop(flush_timeout_s=0.1)
    assert not engine.stop_failed


async def test_a_stop_step_that_fails_is_reported_and_the_rest_still_runs(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_close() -> None:
        raise OSError("the disk went away")

    monkeypatch.setattr(engine.committer, "close", broken_close)
    await engine.stop(flush_timeout_s=0.1)
    assert engine.stop_failed
    assert engine.queue._conn is None  # closed all the same


async def test_a_clean_stop_is_not_a_failure(engine: Engine) -> None:
    await engine.stop(flush_timeout_s=0.1)
    assert not engine.stop_failed
