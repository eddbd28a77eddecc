"""moby.supervisor: a task that fails is logged, counted, restarted after a backoff; readiness knows."""

from __future__ import annotations

import asyncio

from moby.supervisor import Supervisor


async def test_a_crashing_task_is_restarted_and_reported_down_meanwhile() -> None:
    restarts: list[str] = []
    runs = 0
    release = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        await release.wait()
        await asyncio.Event().wait()  # then runs for ever

    sup = Supervisor(on_restart=restarts.append, initial_s=0.05, max_s=0.1)
    sup.run("flaky", flaky)
    await asyncio.sleep(0.01)
    assert sup.down == ["flaky"]  # crashed once, waiting for its restart
    for _ in range(100):
        if runs == 3:
            break
        await asyncio.sleep(0.01)
    assert runs == 3 and restarts == ["flaky", "flaky"]
    assert sup.down == []
    assert await sup.close() == []  # cancelled while stopping: not a failure


async def test_a_task_that_ends_by_itself_is_restarted_too() -> None:
    restarts: list[str] = []
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await asyncio.Event().wait()

    sup = Supervisor(on_restart=restarts.append, initial_s=0.01, max_s=0.01)
    sup.run("quits", quits)
    for _ in range(100):
        if runs == 2:
            break
        await asyncio.sleep(0.01)
    assert runs == 2 and restarts == ["quits"]
    await sup.close()


async def test_a_failure_while_stopping_is_recorded_not_restarted() -> None:
    stop = asyncio.Event()

    async def fails_on_stop() -> None:
        await stop.wait()
        raise OSError("flush failed")

    sup = Supervisor(initial_s=0.01, max_s=0.01)
    task: asyncio.Task[None] | None = None

    def start() -> asyncio.Task[None]:
        nonlocal task
        task = asyncio.create_task(fails_on_stop())
        return task

    sup.watch("writer", start)
    await asyncio.sleep(0)
    sup.stopping()
    stop.set()
    await asyncio.sleep(0.02)
    failures = await sup.close()
    assert [(name, str(exc)) for name, exc in failures] == [("writer", "flush failed")]
    assert sup.down == []


async def test_close_ends_a_watcher_that_waits_to_restart() -> None:
    async def crash() -> None:
        raise ValueError("always")

    sup = Supervisor(initial_s=60, max_s=60)
    sup.run("crash", crash)
    await asyncio.sleep(0.01)
    assert sup.down == ["crash"]
    await asyncio.wait_for(sup.close(), 1)
