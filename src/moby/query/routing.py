"""Which resolution answers a question: ``raw``, ``rollup_1m`` or ``rollup_1h``. Pure functions.

The rule, in order:

1. the step the reader needs: the ``GROUP BY time()`` interval if there is one, else the range
   divided by ``max_points`` if given, else the range divided by :data:`DEFAULT_POINTS`
   (so without hints: under 6 h reads raw, under 15 days ``rollup_1m``, longer ``rollup_1h``);
2. the coarsest resolution whose own step is not coarser than that step (raw has step 0);
3. retention: a range that starts before a policy's retention horizon cannot be answered by it,
   so the next coarser one is taken (a 40-day-old range never reads the 30-day ``raw``).

A question without a lower time bound and without an interval reads raw (it asks for the
newest data or for everything, and only raw holds the newest minute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
DEFAULT_POINTS: Final = 360


@dataclass(frozen=True)
class Resolution:
    policy: str  # the retention policy's name
    step_ms: int  # the policy's own granularity; 0 for raw
    retention_ms: int  # 0: kept forever


def default_resolutions(
    raw_ms: int = 30 * DAY_MS, rollup_1m_ms: int = 365 * DAY_MS, rollup_1h_ms: int = 1825 * DAY_MS
) -> tuple[Resolution, ...]:
    return (
        Resolution("raw", 0, raw_ms),
        Resolution("rollup_1m", MINUTE_MS, rollup_1m_ms),
        Resolution("rollup_1h", HOUR_MS, rollup_1h_ms),
    )


def retention_ms(duration: str) -> int:
    """A retention duration such as ``30d`` or ``52w`` (``INF``: forever) in milliseconds."""
    units = {"s": 1_000, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}
    if duration.upper() == "INF":
        return 0
    total = 0
    number = ""
    for c in duration:
        if c.isdigit():
            number += c
        else:
            total += int(number) * units[c]
            number = ""
    return total


def choose(
    start_ms: float | None,
    end_ms: float,
    now_ms: float,
    *,
    interval_ms: float | None = None,
    max_points: int | None = None,
    resolutions: tuple[Resolution, ...] | None = None,
) -> Resolution:
    """The resolution for the range [start, end] (see the module's docstring for the rule)."""
    levels = resolutions or default_resolutions()
    if start_ms is None and not interval_ms:
        return levels[0]
    if interval_ms:
        step = interval_ms
    else:
        assert start_ms is not None
        step = max(end_ms - start_ms, 0) / (max_points or DEFAULT_POINTS)
    index = max(i for i, level in enumerate(levels) if level.step_ms <= step)
    if start_ms is not None:
        while (
            index < len(levels) - 1
            and levels[index].retention_ms
            and start_ms < now_ms - levels[index].retention_ms
        ):
            index += 1
    return levels[index]


def bucket_ms(start_ms: float, end_ms: float, max_points: int | None, resolution: Resolution) -> int | None:
    """The GROUP BY step that keeps an answer within ``max_points`` per series, or None if the
    resolution's own points already fit (raw finer than a second is returned as stored)."""
    if not max_points:
        return None
    needed = (end_ms - start_ms) / max_points
    unit = max(resolution.step_ms, 1000)
    if needed <= resolution.step_ms or (resolution.step_ms == 0 and needed < 1000):
        return None
    return int(math.ceil(needed / unit) * unit)
