"""A dependency's availability, logged once per state change instead of once per retry.

A retry loop reports every attempt (:meth:`Outage.failed`, :meth:`Outage.succeeded`); the log
gets three kinds of line, whatever the number of loops or retries behind them:

* one warning when the dependency goes away: ``InfluxDB unavailable url=… error=…``
* while it is away, a summary every ``summary_every_s``: ``InfluxDB still unavailable url=…
  down_s=… failures=… error=…`` (the last error), and a new warning when the *reason* changes
  (e.g. from "connection refused" to "401 unauthorized": the operator has something new to do);
* one line when it is back: ``InfluxDB available again url=… down_s=… failures=…`` plus what the
  owner adds (``details``: e.g. how many points waited).

Several loops may share one :class:`Outage` (the writer's slots, a bootstrap loop): they
describe one dependency. A failure of an attempt that *started* before the dependency came back
is old news and is ignored, so in-flight requests from the outage do not re-open it.

The URL is shown redacted (no password). Summaries are timed by the event loop when one runs
(``loop.call_later``), so they come every ``summary_every_s`` even when the retries are slower;
:meth:`tick` is the same check, for callers without a loop and for tests with a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from moby.configerror import redact_url

_log = structlog.get_logger(__name__)


class Outage:
    def __init__(
        self,
        name: str,
        url: str,
        *,
        logger: Any = None,
        summary_every_s: float = 30.0,
        details: Callable[[], Mapping[str, object]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.url = redact_url(url)
        self._log = logger if logger is not None else _log
        self._summary_every = summary_every_s
        self._details = details
        self._clock = clock
        self._down_since: float | None = None
        self._changed_at = clock()  # when it last went down or came back
        self._last_line = 0.0
        self._failures = 0  # since it went down
        self._since_line = 0  # failures since the last line
        self._reason = ""
        self._error = ""
        self._timer: asyncio.TimerHandle | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    @property
    def down_for_s(self) -> float:
        return 0.0 if self._down_since is None else self._clock() - self._down_since

    def failed(self, error: object, *, reason: str = "", started: float | None = None) -> None:
        """An attempt failed. ``reason`` classifies it (a new reason while down is logged);
        ``started`` (same clock) is when the attempt began."""
        now = self._clock()
        if self._down_since is None:
            if started is not None and started < self._changed_at:
                return  # began before the dependency came back: says nothing about now
            self._down_since = self._changed_at = self._last_line = now
            self._failures, self._since_line = 1, 0
            self._reason, self._error = reason, _text(error)
            self._log.warning(f"{self.name} unavailable", url=self.url, error=self._error)
            self._schedule()
            return
        self._failures += 1
        self._since_line += 1
        self._error = _text(error)
        if reason != self._reason:
            self._reason = reason
            self._line("warning", f"{self.name} still unavailable, for another reason")
        else:
            self.tick()

    def succeeded(self) -> None:
        """An attempt worked: if the dependency was away, say it is back."""
        if self._down_since is None:
            return
        now = self._clock()
        down_s = now - self._down_since
        details = dict(self._details()) if self._details is not None else {}
        self._down_since, self._changed_at = None, now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._log.info(
            f"{self.name} available again",
            url=self.url,
            down_s=round(down_s, 1),
            failures=self._failures,
            **details,
        )

    def tick(self) -> None:
        """Log the summary if one is due (the timer calls it; so may a retry loop)."""
        if self._down_since is not None and self._clock() - self._last_line >= self._summary_every:
            self._line("warning", f"{self.name} still unavailable")

    def _line(self, level: str, event: str) -> None:
        getattr(self._log, level)(
            event,
            url=self.url,
            down_s=round(self.down_for_s, 1),
            failures=self._since_line,
            error=self._error,
        )
        self._last_line = self._clock()
        self._since_line = 0

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: summaries come from failed() and tick()
            return
        due_in = self._last_line + self._summary_every - self._clock()
        self._timer = loop.call_later(max(due_in, 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._down_since is None:
            return
        self.tick()
        self._schedule()


def _text(error: object) -> str:
    text = str(error) or type(error).__name__
    return text[:300]
