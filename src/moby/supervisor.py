"""Long-running tasks that come back: the backend's loops are supervised, none may die silently.

An unexpected exception (or a loop that ends while nothing asked it to) is logged with the
task's name and the traceback, counted (``moby_task_restarts_total{task}``), and the task is
started again after a backoff (1 s doubling to 30 s, with jitter; from the bottom again after a
task ran for a minute). While a task is down, :attr:`Supervisor.down` names it, and ``/readyz``
answers 503. During shutdown nothing is restarted, and a task that fails then is recorded in
:attr:`Supervisor.failures` so the process can exit non-zero.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from moby.net import Backoff

log = structlog.get_logger(__name__)

STABLE_S = 60.0  # a task that ran this long before failing restarts after the shortest delay


class Supervisor:
    def __init__(
        self,
        *,
        on_restart: Callable[[str], None] | None = None,
        initial_s: float = 1.0,
        max_s: float = 30.0,
    ) -> None:
        self._on_restart = on_restart
        self._initial, self._max = initial_s, max_s
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._down: set[str] = set()
        self._stopping = False
        self.failures: list[tuple[str, BaseException]] = []  # tasks that failed while stopping

    def watch(self, name: str, start: Callable[[], asyncio.Task[Any]]) -> None:
        """Supervise the task ``start()`` returns; call ``start()`` again to restart it."""
        if name in self._watchers:
            raise ValueError(f"a task named {name!r} is already supervised")
        self._watchers[name] = asyncio.create_task(self._watch(name, start), name=f"supervise-{name}")

    def run(self, name: str, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Supervise ``make()``, run as a task of its own."""
        self.watch(name, lambda: asyncio.create_task(make(), name=name))

    @property
    def down(self) -> list[str]:
        """The tasks that failed and wait for their restart."""
        return sorted(self._down)

    async def _watch(self, name: str, start: Callable[[], asyncio.Task[Any]]) -> None:
        backoff = Backoff(self._initial, self._max)
        while True:
            began = time.monotonic()
            task = start()
            self._tasks[name] = task
            self._down.discard(name)
            await asyncio.wait({task})
            error = None if task.cancelled() else task.exception()
            if self._stopping:
                if error is not None:
                    self.failures.append((name, error))
                return
            self._down.add(name)
            if time.monotonic() - began >= STABLE_S:
                backoff.reset()
            delay = backoff.next()
            if self._on_restart is not None:
                self._on_restart(name)
            what = "was cancelled" if task.cancelled() else "ended" if error is None else None
            log.error(
                "task failed; restarting it",
                task=name,
                error=what or f"{type(error).__name__}: {error}",
                restart_in=round(delay, 2),
                exc_info=error,
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return

    def stopping(self) -> None:
        """From now on a task that ends is not restarted (call before stopping the components)."""
        self._stopping = True

    async def close(self) -> list[tuple[str, BaseException]]:
        """Cancel what still runs and wait for every watcher; the tasks that failed while stopping."""
        self._stopping = True
        for task in self._tasks.values():
            if not task.done():
                task.cancel()
        for name in self._down:
            self._watchers[name].cancel()  # sleeping before a restart that will not come
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
        return self.failures
