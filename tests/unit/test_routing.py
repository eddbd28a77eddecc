"""Resolution routing (moby.query.routing): range, interval, max_points and retention."""

from __future__ import annotations

import pytest

from moby.query.routing import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    bucket_ms,
    choose,
    default_resolutions,
    retention_ms,
)

NOW = 1_764_139_251_123.0


@pytest.mark.parametrize(
    ("span_ms", "policy"),
    [
        (15 * MINUTE_MS, "raw"),
        (6 * HOUR_MS - MINUTE_MS, "raw"),
        (6 * HOUR_MS + MINUTE_MS, "rollup_1m"),
        (2 * DAY_MS, "rollup_1m"),
        (15 * DAY_MS - HOUR_MS, "rollup_1m"),
        (16 * DAY_MS, "rollup_1h"),
        (90 * DAY_MS, "rollup_1h"),
    ],
)
def test_by_range(span_ms: int, policy: str) -> None:
    assert choose(NOW - span_ms, NOW, NOW).policy == policy


@pytest.mark.parametrize(
    ("span_ms", "max_points", "policy"),
    [(15 * MINUTE_MS, 1000, "raw"), (2 * DAY_MS, 1000, "rollup_1m"), (90 * DAY_MS, 1000, "rollup_1h"),
     (2 * DAY_MS, 100_000, "raw"), (90 * DAY_MS, 200_000, "rollup_1m")],
)  # fmt: skip
def test_by_max_points(span_ms: int, max_points: int, policy: str) -> None:
    assert choose(NOW - span_ms, NOW, NOW, max_points=max_points).policy == policy


@pytest.mark.parametrize(
    ("interval_ms", "policy"),
    [
        (1000, "raw"),
        (59_999, "raw"),
        (MINUTE_MS, "rollup_1m"),
        (5 * MINUTE_MS, "rollup_1m"),
        (HOUR_MS, "rollup_1h"),
    ],
)
def test_by_group_by_interval(interval_ms: int, policy: str) -> None:
    # The interval decides, whatever the span (Grafana derives it from the span and the panel width).
    assert choose(NOW - HOUR_MS, NOW, NOW, interval_ms=interval_ms).policy == policy


def test_retention_moves_to_a_coarser_policy() -> None:
    # 1-second buckets over a range 40 days ago: raw keeps 30 days, so rollup_1m answers.
    start = NOW - 40 * DAY_MS
    assert choose(start, start + 15 * MINUTE_MS, NOW, interval_ms=1000).policy == "rollup_1m"
    start = NOW - 400 * DAY_MS
    assert choose(start, start + 15 * MINUTE_MS, NOW, interval_ms=1000).policy == "rollup_1h"
    short = default_resolutions(raw_ms=7 * DAY_MS)
    assert choose(NOW - 8 * DAY_MS, NOW - 8 * DAY_MS + HOUR_MS, NOW, resolutions=short).policy == "rollup_1m"


def test_no_lower_bound_reads_raw() -> None:
    assert choose(None, NOW, NOW).policy == "raw"


def test_buckets() -> None:
    raw, m1, h1 = default_resolutions()
    assert bucket_ms(0, 15 * MINUTE_MS, None, raw) is None
    assert bucket_ms(0, 15 * MINUTE_MS, 1000, raw) is None  # finer than a second: as stored
    assert bucket_ms(0, 15 * MINUTE_MS, 100, raw) == 9000
    assert bucket_ms(0, 2 * DAY_MS, 1000, m1) == 3 * MINUTE_MS  # 172.8 s → whole minutes
    assert bucket_ms(0, 2 * DAY_MS, 5000, m1) is None  # 2880 minutes fit
    assert bucket_ms(0, 90 * DAY_MS, 1000, h1) == 3 * HOUR_MS


def test_retention_ms() -> None:
    assert retention_ms("30d") == 30 * DAY_MS
    assert retention_ms("52w") == 364 * DAY_MS
    assert retention_ms("1h30m") == 90 * MINUTE_MS
    assert retention_ms("INF") == 0
