"""The outage logger: one line when a dependency goes, summaries while away, one when it is back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from moby.outage import Outage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines:
    """A logger that keeps (level, event, fields)."""

    def __init__(self, on_line: Callable[[int], None] = lambda n: None) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []
        self._on_line = on_line

    def __getattr__(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))
            self._on_line(len(self.lines))

        return log

    @property
    def events(self) -> list[str]:
        return [event for _, event, _ in self.lines]


def make(**kw: Any) -> tuple[Outage, Clock, Lines]:
    clock, lines = Clock(), Lines()
    outage = Outage(
        "InfluxDB",
        "http://admin:s3cret@db:8086",
        logger=lines,
        summary_every_s=30,
        clock=clock,
        details=lambda: {"points_waiting": 1234},
        **kw,
    )
    return outage, clock, lines


def test_many_failures_make_one_line_then_a_summary_every_30_s_then_one_back_line() -> None:
    outage, clock, lines = make()
    outage.succeeded()  # up and fine: nothing to say
    for _ in range(4):  # four writer slots fail at once
        outage.failed(ConnectionRefusedError("Connection refused"), reason="retryable")
    assert lines.events == ["InfluxDB unavailable"]
    level, _, fields = lines.lines[0]
    assert level == "warning"
    assert fields == {"url": "http://admin:***@db:8086", "error": "Connection refused"}
    for _ in range(94):  # a failure every second for 95 s
        clock.now += 1
        outage.failed(TimeoutError(), reason="retryable")
        outage.tick()
    assert lines.events == ["InfluxDB unavailable"] + ["InfluxDB still unavailable"] * 3
    summaries = [fields for _, event, fields in lines.lines[1:]]
    assert [s["down_s"] for s in summaries] == [30.0, 60.0, 90.0]
    assert summaries[0]["failures"] == 3 + 30 and summaries[1]["failures"] == 30
    assert all(s["url"] == "http://admin:***@db:8086" and s["error"] == "TimeoutError" for s in summaries)
    clock.now += 2.5
    outage.succeeded()
    outage.succeeded()
    assert lines.lines[-1] == (
        "info",
        "InfluxDB available again",
        {"url": "http://admin:***@db:8086", "down_s": 96.5, "failures": 98, "points_waiting": 1234},
    )
    assert len(lines.lines) == 5
    assert "s3cret" not in repr(lines.lines)


def test_a_new_reason_while_away_is_a_line_of_its_own() -> None:
    outage, clock, lines = make()
    outage.failed("connection refused", reason="retryable")
    clock.now += 5
    outage.failed("401 unauthorized", reason="config")
    outage.failed("401 unauthorized", reason="config")
    assert lines.events == ["InfluxDB unavailable", "InfluxDB still unavailable, for another reason"]
    assert lines.lines[1][2]["error"] == "401 unauthorized"


def test_a_failure_of_an_attempt_begun_before_recovery_is_old_news() -> None:
    outage, clock, lines = make()
    outage.failed("refused")
    started = clock.now + 1  # an attempt begins while it is still down ...
    clock.now += 10
    outage.succeeded()  # ... another one gets through ...
    clock.now += 1
    outage.failed("refused", started=started)  # ... and the old one's failure arrives late
    assert lines.events == ["InfluxDB unavailable", "InfluxDB available again"]
    assert not outage.down
    outage.failed("refused", started=clock.now)  # a fresh attempt failing is news
    assert lines.events[-1] == "InfluxDB unavailable"


def test_no_summary_before_its_time_and_none_after_recovery() -> None:
    outage, clock, lines = make()
    outage.failed("x")
    clock.now += 29.9
    outage.tick()
    assert lines.events == ["InfluxDB unavailable"]
    outage.succeeded()
    clock.now += 100
    outage.tick()
    assert lines.events == ["InfluxDB unavailable", "InfluxDB available again"]


async def test_summaries_come_from_the_event_loop_even_without_retries() -> None:
    """A writer backing off for 30 s still gets its summary on time: the loop's timer ticks."""
    third = asyncio.Event()
    lines = Lines(on_line=lambda n: third.set() if n == 3 else None)
    outage = Outage("Broker", "mqtt://b:1883", logger=lines, summary_every_s=0.05)
    outage.failed("refused")
    await asyncio.wait_for(third.wait(), 30)  # two summaries with no further failure reported
    assert lines.events == ["Broker unavailable", "Broker still unavailable", "Broker still unavailable"]
    outage.succeeded()
    assert outage._timer is None  # the timer stopped with the outage
